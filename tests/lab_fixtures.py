"""Pytest plugin with the session-scoped `lab` fixture: the broker lab of scripts/brokerlab.py.

Enable it with `pytest_plugins = ["tests.lab_fixtures"]` in tests/conftest.py. The lab is started when
needed (idempotent, so a running lab is reused) and deliberately left running at session end; stop it
with `make brokers-stop` (python scripts/brokerlab.py stop). BROKERLAB_DIR overrides the lab directory.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "brokerlab.py"


def load_brokerlab() -> ModuleType:
    """The scripts/brokerlab.py module, imported once by path."""
    module = sys.modules.get("brokerlab")
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location("brokerlab", _SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["brokerlab"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def lab() -> dict:
    """The running broker lab's description (lab.json content); starts it when needed, never stops it."""
    return load_brokerlab().start(os.environ.get("BROKERLAB_DIR") or None)
