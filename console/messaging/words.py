"""How the pages, the audit log and the CLI word a setting's value: a switch is on or off and an
unset value "(none)" (never Python's True, False or None), a value left to its default names it."""
from __future__ import annotations

from typing import Any

from .schema import FIELDS


def word(value: Any) -> str:
    """One value in words."""
    if value is None or value == "":
        return "(none)"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return " > ".join(str(v) for v in value) if value and isinstance(value[0], str) else str(value)
    return str(value)


def setting_value(protocol: str | None, field: str, value: Any) -> str:
    """A value of one setting in a change ("localhost (default)" for a value reset to the default)."""
    if field == "priorities" and not value:
        return "(default order)"
    f = FIELDS.get(protocol or "", {}).get(field)
    if value is None and f is not None and f.default not in (None, ""):
        return f"{word(f.default)} (default)"
    return word(value)
