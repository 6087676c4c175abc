"""Protocol selection: the first protocol of the effective priority list that is enabled and that
every connected element supports (the platform's rule, used for services, adapters and delivery)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from ..brokers import PROTOCOLS


@dataclass
class Selection:
    """The protocol chosen for a set of services, or why none could be."""

    protocol: str | None
    supported: dict[str, list[str]] = field(default_factory=dict)
    enabled: list[str] = field(default_factory=list)
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "supported": self.supported, "enabled": self.enabled,
                "reason": self.reason}


def select_protocol(supported: Mapping[str, Iterable[str]], priorities: list[str],
                    enabled: Iterable[str]) -> Selection:
    """The first protocol of `priorities` that is enabled and supported by every service."""
    support = {name: [p for p in PROTOCOLS if p in set(protocols)]
               for name, protocols in supported.items()}
    on = [p for p in priorities if p in set(enabled)]
    for protocol in on:
        if all(protocol in protocols for protocols in support.values()):
            return Selection(protocol, support, on, f"{protocol} is the first enabled protocol in "
                             "the priority list that every service supports.")
    common = set(PROTOCOLS)
    for protocols in support.values():
        common &= set(protocols)
    if not common:
        reason = "No common protocol: " + "; ".join(
            f"{name} supports {', '.join(p) or 'nothing'}" for name, p in support.items()) + "."
    else:
        reason = (f"The common protocols ({', '.join(sorted(common))}) are all disabled; enable "
                  "one of them.")
    return Selection(None, support, on, reason)
