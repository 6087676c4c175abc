"""Extension services, adapters and protocol selection.

The platform picks a protocol as the first one in the effective priority list that is enabled and
that every connected element supports. An adapter keeps the identity (see settings.identity) of the
settings it was created with, so later installation-time changes can be measured against it.
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError

from .. import audit as audit_log
from ..brokers import PROTOCOLS
from ..crypto import encrypt
from ..delivery import outbox
from ..delivery.documents import broker_values
from ..extensions import db
from ..messaging.effective import current
from ..messaging.identity import identity, identity_hash
from ..messaging.resolve import ProtocolSettings
from ..messaging.selection import Selection, select_protocol  # noqa: F401  - part of this API
from ..models import Adapter, ExtensionService

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:/-]{0,119}$")


class RegistryError(ValueError):
    """Invalid registry input; `errors` maps field names to messages."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def _clean_name(raw: Any, what: str) -> str:
    if not isinstance(raw, str) or not NAME.match(raw.strip()):
        raise RegistryError({"name": f"Give the {what} a name of 1–120 letters, digits, spaces "
                                     "or . _ : / - (starting with a letter or digit)."})
    return raw.strip()


def _clean_protocols(raw: Any) -> list[str]:
    if not isinstance(raw, list) or not raw or not all(isinstance(p, str) for p in raw):
        raise RegistryError({"protocols": f"Give a non-empty list of protocols: {', '.join(PROTOCOLS)}."})
    unknown = [p for p in raw if p.lower() not in PROTOCOLS]
    if unknown:
        raise RegistryError({"protocols": f"Unknown protocol: {', '.join(unknown)}. "
                                          f"Use {', '.join(PROTOCOLS)}."})
    return [p for p in PROTOCOLS if p in {x.lower() for x in raw}]


def _clean_callback(raw: Any) -> str | None:
    if raw is None or raw == "":
        return None
    try:
        parts = urlsplit(raw) if isinstance(raw, str) else None
    except ValueError:      # "Invalid IPv6 URL": an unclosed bracket
        parts = None
    if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname
            or len(raw) > 2048 or any(c.isspace() for c in raw)):
        raise RegistryError({"callback_url": "Give an http:// or https:// URL with a host "
                                             "(at most 2048 characters), or leave it empty."})
    if parts.username or parts.password:
        raise RegistryError({"callback_url": "Leave credentials out of the URL: callbacks are "
                                             "signed with the service's signing secret."})
    try:
        _ = parts.port  # urllib raises ValueError for a port that is not a number
    except ValueError:
        raise RegistryError({"callback_url": "The port of the URL is not a number 1–65535."}) from None
    return raw


def _audited(action: str, actor: str | None, origin: str):
    """Run a registry change, auditing its refusal (and re-raising) or its success."""

    def wrap(fn):
        def run(*args: Any) -> Any:
            try:
                outcome, protocols, summary = fn(*args)
            except RegistryError as exc:
                audit_log.record_rejection(action, actor=actor, origin=origin, protocol=None,
                                            errors=exc.errors)
                raise
            audit_log.audit(action, "applied", actor=actor, origin=origin, protocols=protocols,
                             summary=summary)
            db.session.commit()
            return outcome
        return run
    return wrap


@dataclass
class Registration:
    """A registered service; `signing_secret` is set (once) when a callback URL was given."""

    service: ExtensionService
    created: bool
    signing_secret: str | None = None


_KEEP = object()


def register_service(name: Any, protocols: Any, actor: str | None = None,
                     origin: str = "console", callback_url: Any = _KEEP) -> Registration:
    """Register a service, or update an existing one. Every registration that carries a callback
    URL rotates the signing secret and answers it; an empty one turns callbacks off."""
    @_audited("register_service", actor, origin)
    def change():
        clean, supported = _clean_name(name, "service"), _clean_protocols(protocols)
        callback = None if callback_url is _KEEP else _clean_callback(callback_url)
        row = find_service(clean)
        created = row is None
        if created:
            row = ExtensionService(name=clean, protocols=supported)
            db.session.add(row)
        else:
            row.protocols = supported
        secret = None
        if callback_url is not _KEEP:
            row.callback_url = callback
            secret = secrets.token_hex(32) if callback else None
            row.signing_secret = encrypt(secret) if secret else None
        db.session.flush()
        outbox.refresh(current(), services=[row])
        verb = "Registered" if created else "Updated"
        where = f"; callbacks to {callback}" if callback else (
            "; no callbacks" if callback_url is not _KEEP else "")
        return (Registration(row, created, secret), supported,
                f"{verb} service {clean}: {', '.join(supported)}{where}")
    result = change()
    outbox.wake()
    return result


def find_service(name: str) -> ExtensionService | None:
    return db.session.execute(db.select(ExtensionService).where(
        ExtensionService.name == name)).scalar_one_or_none()


def effective_all() -> dict[str, ProtocolSettings]:
    """Effective settings of every protocol now."""
    return current().all()


def current_selection(services: list[ExtensionService],
                      settings: dict[str, ProtocolSettings] | None = None,
                      priorities: list[str] | None = None) -> Selection:
    """The protocol that connecting `services` would get with the current settings."""
    settings = settings or effective_all()
    priorities = priorities or current().priorities()[0]
    enabled = [p for p, s in settings.items() if s.enabled]
    return select_protocol({s.name: s.protocols for s in services}, priorities, enabled)


def create_adapter(name: Any, service_name: Any, actor: str | None,
                   origin: str = "console") -> tuple[Adapter, Selection]:
    """Create an adapter on a service: protocol by the priority rule, snapshot of its settings."""
    @_audited("create_adapter", actor, origin)
    def change():
        clean = _clean_name(name, "adapter")
        service = find_service(service_name.strip()) if isinstance(service_name, str) else None
        if service is None:
            raise RegistryError({"service": f"No registered service named {service_name!r}."})
        settings = effective_all()
        selection = current_selection([service], settings)
        if selection.protocol is None:
            raise RegistryError({"service": selection.reason})
        snapshot = identity(settings[selection.protocol])
        adapter = Adapter(name=clean, service_id=service.id, protocol=selection.protocol,
                          snapshot=snapshot, snapshot_hash=identity_hash(snapshot),
                          created_by=actor)
        db.session.add(adapter)
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            raise RegistryError({"name": f"An adapter named {clean} exists already."}) from None
        return ((adapter, selection), [selection.protocol],
                f"Created adapter {clean} on {service.name} using {selection.protocol}")
    return change()


def snapshot_differences(snapshot: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The snapshot keys whose value differs from the current identity."""
    return sorted(k for k in set(snapshot) | set(current) if snapshot.get(k) != current.get(k))


def drift_summary(settings: dict[str, ProtocolSettings] | None = None) -> dict[str, dict[str, Any]]:
    """Per protocol: the current identity hash and how many adapters no longer match it (one
    grouped query, whatever the number of adapters)."""
    settings = settings or effective_all()
    out: dict[str, dict[str, Any]] = {}
    rows = db.session.execute(db.select(Adapter.protocol, Adapter.snapshot_hash,
                                        func.count(Adapter.id))
                              .group_by(Adapter.protocol, Adapter.snapshot_hash)).all()
    for protocol in PROTOCOLS:
        current = identity_hash(identity(settings[protocol]))
        out[protocol] = {"hash": current, "adapters": 0, "diverged": 0,
                         "enabled": settings[protocol].enabled}
    for protocol, digest, count in rows:
        entry = out[protocol]
        entry["adapters"] += count
        if digest != entry["hash"]:
            entry["diverged"] += count
    return out


def find_adapter(name: str) -> Adapter | None:
    return db.session.execute(db.select(Adapter).where(Adapter.name == name)).scalar_one_or_none()


def adapter_config(adapter: Adapter, reveal: bool) -> dict[str, Any]:
    """The settings `adapter` must use now: its protocol's current values, and whether they
    diverge from the snapshot it was created with."""
    snap = current()
    settings = snap.settings(adapter.protocol, reveal)
    now = identity(settings)
    differences = snapshot_differences(adapter.snapshot, now)
    service = db.session.get(ExtensionService, adapter.service_id)
    return {"adapter": adapter.name, "service": service.name if service else None,
            "protocol": adapter.protocol, "enabled": settings.enabled,
            "settings": broker_values(settings, reveal), "snapshot": adapter.snapshot,
            "current": now, "diverges": bool(differences), "differences": differences}


def migrate_adapter(name: Any, actor: str | None, origin: str = "console") -> tuple[Adapter, Selection]:
    """Move an adapter onto the current settings: the protocol its service gets now by priority
    and a new snapshot of that protocol's settings."""
    @_audited("migrate_adapter", actor, origin)
    def change():
        adapter = find_adapter(name.strip()) if isinstance(name, str) else None
        if adapter is None:
            raise RegistryError({"name": f"No adapter named {name!r}."})
        service = db.session.get(ExtensionService, adapter.service_id)
        settings = effective_all()
        selection = current_selection([service], settings)
        if selection.protocol is None:
            raise RegistryError({"service": selection.reason})
        old_protocol, old_address = adapter.protocol, adapter.snapshot.get("address")
        snapshot = identity(settings[selection.protocol])
        adapter.protocol, adapter.snapshot = selection.protocol, snapshot
        adapter.snapshot_hash = identity_hash(snapshot)
        return ((adapter, selection), sorted({old_protocol, selection.protocol}),
                f"Migrated adapter {adapter.name} from {old_protocol} {old_address} to "
                f"{selection.protocol} {snapshot.get('address')}")
    return change()


def delete_adapter(name: Any, actor: str | None, origin: str = "console") -> None:
    """Remove an adapter from the registry."""
    @_audited("delete_adapter", actor, origin)
    def change():
        adapter = find_adapter(name.strip()) if isinstance(name, str) else None
        if adapter is None:
            raise RegistryError({"name": f"No adapter named {name!r}."})
        db.session.delete(adapter)
        return None, [adapter.protocol], f"Deleted adapter {adapter.name} ({adapter.protocol})"
    return change()


def delete_service(name: Any, actor: str | None, origin: str = "console") -> None:
    """Remove a service that has no adapters (its tokens stay until revoked)."""
    @_audited("delete_service", actor, origin)
    def change():
        row = find_service(name.strip()) if isinstance(name, str) else None
        if row is None:
            raise RegistryError({"name": f"No registered service named {name!r}."})
        count = db.session.execute(db.select(func.count(Adapter.id))
                                   .where(Adapter.service_id == row.id)).scalar()
        if count:
            raise RegistryError({"name": f"{row.name} still has {count} adapter(s): delete or "
                                         "migrate them first."})
        db.session.delete(row)
        return None, [], f"Deleted service {row.name}"
    return change()
