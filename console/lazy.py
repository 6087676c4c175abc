"""Import on first use, by name: the drivers registry and the CLI's lazy commands name what they need as
`"module:attribute"` strings, so a process imports only the libraries it uses."""
from __future__ import annotations

import importlib.util
import sys
from importlib import import_module
from types import ModuleType
from typing import Any, Mapping

import click
from flask.cli import AppGroup


def load(target: str) -> Any:
    """The object that `"module:attribute"` names, importing its module."""
    module, _, name = target.partition(":")
    return getattr(import_module(module), name)


class LazyAppGroup(AppGroup):
    """The app's CLI group: commands named in `lazy` are imported only when they run or are listed."""

    def __init__(self, *args: Any, lazy: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, str] = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command name, the lazy ones included (without importing them)."""
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command `cmd_name`, imported now when it is a lazy one."""
        if cmd_name in self.lazy and cmd_name not in self.commands:
            self.add_command(load(self.lazy[cmd_name]), cmd_name)
        return super().get_command(ctx, cmd_name)


def module(name: str) -> ModuleType:
    """Module `name`, executed on its first attribute access (importlib.util.LazyLoader): for heavy
    libraries that only some commands and requests touch, e.g. cryptography.x509 for certificates."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    lazy = importlib.util.module_from_spec(spec)
    sys.modules[name] = lazy
    loader.exec_module(lazy)
    parent, _, child = name.rpartition(".")
    if parent and type(sys.modules[parent]) is ModuleType:
        # as `import parent.child` would; a parent wrapped in a proxy (cryptography wraps modules
        # with deprecations) would inspect the value and load it at once, so it is left alone
        setattr(sys.modules[parent], child, lazy)
    return lazy
