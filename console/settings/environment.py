"""What the environment sets that the console ignores or flags: the warnings the page shows, in one
list for the server's start-up log and `brokers list`."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from ..brokers import PROTOCOLS
from . import service


@dataclass(frozen=True)
class SettingsWarning:
    """One warning: which protocol and field it is about (None: the priority list or general)."""

    protocol: str | None
    field: str | None
    message: str

    def as_dict(self) -> dict[str, str | None]:
        return {"protocol": self.protocol, "field": self.field, "message": self.message}


def settings_warnings() -> list[SettingsWarning]:
    """Every warning of the Settings → Messaging page: the priority list's, then each protocol's."""
    _, info = service.priorities()
    out = [SettingsWarning(None, "priorities", info["env_error"])] if info.get("env_error") else []
    for protocol in PROTOCOLS:
        _, warnings = service.findings(service.effective(protocol))
        out += [SettingsWarning(protocol, name or None, message) for name, message in warnings]
    return out


def log_environment_warnings(log: logging.Logger) -> list[SettingsWarning]:
    """Log every warning at start-up (invalid SP_* values are ignored and say so here)."""
    found = settings_warnings()
    for item in found:
        where = item.protocol or "priorities"
        log.warning("messaging settings (%s): %s", where, item.message)
    return found
