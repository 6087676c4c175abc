"""Where a protocol's settings point, and the identity adapters keep from them.

An adapter is created with a snapshot of the effective installation-time settings of its protocol
(address, TLS and SASL identity, certificate fingerprints — never secrets). The same functions give the
addresses the checks connect to, so the two can never disagree.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from .resolve import ProtocolSettings
from .rules import kafka_security
from .schema import SCHEMA
from .values import format_host_port, nats_server_addresses, split_host_port

ADDRESS_FIELDS = ("host", "port", "bootstrap_servers", "url", "servers", "addresses")
# the field that lists a protocol's nodes; when set it wins over host and port (MQTT has none)
NODE_LIST_FIELD = {"kafka": "bootstrap_servers", "nats": "servers", "rabbitmq": "addresses",
                   "pulsar": "url"}


def node_list_field(settings: ProtocolSettings) -> str | None:
    """The name of the protocol's node list when it is set (it then wins over host and port)."""
    name = NODE_LIST_FIELD.get(settings.protocol)
    return name if name and settings.get(name) else None


def addresses(settings: ProtocolSettings) -> tuple[tuple[str, int], ...]:
    """Every (host, port) the protocol's settings connect to."""
    if settings.protocol == "kafka" and settings.get("bootstrap_servers"):
        return tuple(split_host_port(x) for x in settings["bootstrap_servers"].split(","))
    if settings.protocol == "nats" and settings.get("servers"):
        return nats_server_addresses(settings["servers"])
    if settings.protocol == "rabbitmq" and settings.get("addresses"):
        return tuple(split_host_port(x) for x in settings["addresses"].split(","))
    if settings.protocol == "pulsar" and settings.get("url"):
        url = settings["url"]
        default = 6651 if url.startswith("pulsar+ssl") else 6650
        return tuple(split_host_port(x, default) for x in url.split("://", 1)[1].split(","))
    return ((settings["host"], int(settings["port"])),)


def pulsar_url(settings: ProtocolSettings) -> str:
    """The Pulsar service URL: the configured one, else built from host, port and TLS."""
    if settings.get("url"):
        return settings["url"]
    scheme = "pulsar+ssl" if settings.get("tls") else "pulsar"
    return f"{scheme}://{format_host_port(*addresses(settings)[0])}"


def uses_tls(settings: ProtocolSettings) -> bool:
    """Whether connections are encrypted."""
    if settings.protocol == "kafka":
        return kafka_security(settings).endswith("SSL")
    if settings.protocol == "pulsar":
        return pulsar_url(settings).startswith("pulsar+ssl://")
    if settings.protocol == "nats" and "tls://" in (settings.get("servers") or ""):
        return True
    return bool(settings.get("tls"))


def address_label(settings: ProtocolSettings) -> str:
    """The address as one string (a URL for Pulsar, a host:port list otherwise)."""
    if settings.protocol == "pulsar":
        return pulsar_url(settings)
    return ",".join(format_host_port(h, p) for h, p in addresses(settings))


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
    if settings.protocol == "kafka":
        out["security_protocol"] = kafka_security(settings)
    return out


def identity_hash(snapshot: dict[str, Any]) -> str:
    """A stable digest of a snapshot, for grouping adapters that share one."""
    return hashlib.sha256(json.dumps(snapshot, sort_keys=True, default=str).encode()).hexdigest()
