"""A service's configuration document: the protocol chosen for it alone and, for every enabled
protocol it supports, every field's effective value — secrets and TLS material (PEM) included when
revealed, masked otherwise. Its ETag is a keyed digest of the revealed content, so it changes with
every secret and says nothing about any."""
from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from flask import current_app

from ..brokers import PROTOCOLS
from ..messaging.effective import Snapshot
from ..messaging.identity import addresses, uses_tls
from ..messaging.resolve import ProtocolSettings
from ..messaging.schema import SCHEMA
from ..messaging.selection import select_protocol
from ..messaging.values import format_host_port
from ..models import ExtensionService

MASKED_SUFFIX = "-masked"


def _pem(value: Any, key: str) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, dict) and not value.get("error"):
        return value.get(key) or None
    return None


def broker_values(settings: ProtocolSettings, reveal: bool) -> dict[str, Any]:
    """Every field of one protocol as a service uses it (TLS material as PEM text)."""
    out: dict[str, Any] = {}
    for f in SCHEMA[settings.protocol]:
        value = settings.get(f.name)
        if f.name == "tls_key":
            out[f.name] = _pem(value, "key_pem") if reveal else {"set": bool(value)}
        elif f.is_file:
            out[f.name] = _pem(value, "certs_pem")
        elif f.secret:
            out[f.name] = (value or None) if reveal else {"set": value not in (None, "")}
        else:
            out[f.name] = value
    out["nodes"] = [format_host_port(h, p) for h, p in addresses(settings)]
    out["tls_active"] = uses_tls(settings)
    return out


def content(snapshot: Snapshot, service: ExtensionService, reveal: bool) -> dict[str, Any]:
    """The document of `service` without its version and ETag."""
    return {"service": service.name, **_shared(snapshot, service, reveal)}


def _shared(snapshot: Snapshot, service: ExtensionService, reveal: bool) -> dict[str, Any]:
    """What a document says besides the service's name: the same for every service that supports
    the same protocols, so it is built once per snapshot (that is, per version) for all of them."""
    protocols = tuple(p for p in PROTOCOLS if p in set(service.protocols or ()))
    if not protocols:        # the reason names the service that supports nothing
        return _build(snapshot, service.name, protocols, reveal)
    key = ("document", protocols, reveal)
    if key not in snapshot.memo:
        snapshot.memo[key] = _build(snapshot, service.name, protocols, reveal)
    return snapshot.memo[key]


def _build(snapshot: Snapshot, name: str, protocols: tuple[str, ...], reveal: bool) -> dict[str, Any]:
    order = snapshot.priorities()[0]
    enabled = snapshot.enabled()
    chosen = select_protocol({name: protocols}, order, enabled)
    return {"priorities": order, "protocol": chosen.protocol, "reason": chosen.reason,
            "brokers": {p: _values(snapshot, p, reveal)
                        for p in order if p in enabled and p in protocols}}


def _values(snapshot: Snapshot, protocol: str, reveal: bool) -> dict[str, Any]:
    key = ("broker_values", protocol, reveal)
    if key not in snapshot.memo:
        snapshot.memo[key] = broker_values(snapshot.settings(protocol, reveal), reveal)
    return snapshot.memo[key]


def etag_of(revealed: dict[str, Any]) -> str:
    """A stable keyed digest of a revealed document (the same on every replica). The service's name
    is left out: it never changes, and services with the same protocols then share one ETag."""
    key = str(current_app.config["SECRET_KEY"]).encode()
    body = json.dumps({k: v for k, v in revealed.items() if k != "service"}, sort_keys=True,
                      default=str).encode()
    return hmac.new(key, body, hashlib.sha256).hexdigest()[:40]


def etag_for(snapshot: Snapshot, service: ExtensionService) -> str:
    """The ETag `service`'s document has under `snapshot` (computed once per group of services
    sharing a document)."""
    shared = _shared(snapshot, service, reveal=True)
    key = ("etag", id(shared))
    if key not in snapshot.memo:
        snapshot.memo[key] = (shared, etag_of(shared))    # the document is kept so its id stays its own
    return snapshot.memo[key][1]
