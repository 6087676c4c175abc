"""Where a protocol's settings point, and the identity adapters keep from them.

An adapter is created with a snapshot of the effective installation-time settings of its protocol
(address, TLS and SASL identity, certificate fingerprints — never secrets). The same functions give the
addresses the checks connect to, so the two can never disagree.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from ..brokers import SPECS
from .resolve import ProtocolSettings
from .schema import SCHEMA

# host and port, and every protocol's node list: "host", "port", "bootstrap_servers", "url", "servers", "addresses"
ADDRESS_FIELDS = ("host", "port", *(spec.node_list for spec in SPECS.values() if spec.node_list))


def node_list_field(settings: ProtocolSettings) -> str | None:
    """The name of the protocol's node list when it is set (it then wins over host and port)."""
    name = SPECS[settings.protocol].node_list
    return name if name and settings.get(name) else None


def addresses(settings: ProtocolSettings) -> tuple[tuple[str, int], ...]:
    """Every (host, port) the protocol's settings connect to."""
    return SPECS[settings.protocol].addresses(settings)


def url(settings: ProtocolSettings) -> str | None:
    """The service URL the driver connects with, for a protocol that has one (Pulsar)."""
    return SPECS[settings.protocol].url(settings)


def uses_tls(settings: ProtocolSettings) -> bool:
    """Whether connections are encrypted."""
    return SPECS[settings.protocol].uses_tls(settings)


def address_label(settings: ProtocolSettings) -> str:
    """The address as one string (a service URL where the protocol has one, a host:port list otherwise)."""
    return SPECS[settings.protocol].address_label(settings)


def _fingerprints(value: Any) -> list[str] | None:
    if not isinstance(value, dict) or not value.get("certificates"):
        return None
    return [c["sha256"] for c in value["certificates"]]


def identity(settings: ProtocolSettings) -> dict[str, Any]:
    """The snapshot an adapter keeps: protocol, address and every other installation-time value
    (secrets excluded; TLS material by fingerprint)."""
    out: dict[str, Any] = {"protocol": settings.protocol, "address": address_label(settings),
                           "tls": uses_tls(settings)}
    for f in SCHEMA[settings.protocol]:
        if (not f.install_time or f.secret or f.name in ADDRESS_FIELDS or f.name == "enabled"
                or f.name == "tls"):
            continue
        out[f.name] = _fingerprints(settings.get(f.name)) if f.is_file else settings.get(f.name)
    out.update(SPECS[settings.protocol].derived(settings))
    return out


def identity_hash(snapshot: dict[str, Any]) -> str:
    """A stable digest of a snapshot, for grouping adapters that share one."""
    return hashlib.sha256(json.dumps(snapshot, sort_keys=True, default=str).encode()).hexdigest()
