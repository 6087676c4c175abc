"""Extension services, adapters and protocol selection.

The platform picks a protocol as the first one in the effective priority list that is enabled and
that every connected element supports. An adapter keeps the identity (see settings.identity) of the
settings it was created with, so later installation-time changes can be measured against it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError

from ..brokers import PROTOCOLS
from ..extensions import db
from ..models import Adapter, ExtensionService
from ..settings import service as settings_service
from ..settings.identity import identity, identity_hash
from ..settings.resolve import ProtocolSettings

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:/-]{0,119}$")


class RegistryError(ValueError):
    """Invalid registry input; `errors` maps field names to messages."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


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


def _audited(action: str, actor: str | None, origin: str):
    """Run a registry change, auditing its refusal (and re-raising) or its success."""
    from ..settings import changes as change_log

    def wrap(fn):
        def run(*args: Any) -> Any:
            try:
                outcome, protocols, summary = fn(*args)
            except RegistryError as exc:
                change_log.record_rejection(action, actor=actor, origin=origin, protocol=None,
                                            errors=exc.errors)
                raise
            change_log.audit(action, "applied", actor=actor, origin=origin, protocols=protocols,
                             summary=summary)
            db.session.commit()
            return outcome
        return run
    return wrap


def register_service(name: Any, protocols: Any, actor: str | None = None,
                     origin: str = "console") -> tuple[ExtensionService, bool]:
    """Register a service, or update the protocols of an existing one; (service, created)."""
    @_audited("register_service", actor, origin)
    def change():
        clean, supported = _clean_name(name, "service"), _clean_protocols(protocols)
        row = find_service(clean)
        created = row is None
        if created:
            row = ExtensionService(name=clean, protocols=supported)
            db.session.add(row)
        else:
            row.protocols = supported
        db.session.commit()
        verb = "Registered" if created else "Updated"
        return (row, created), supported, f"{verb} service {clean}: {', '.join(supported)}"
    return change()


def find_service(name: str) -> ExtensionService | None:
    return db.session.execute(db.select(ExtensionService).where(
        ExtensionService.name == name)).scalar_one_or_none()


def effective_all() -> dict[str, ProtocolSettings]:
    return {p: settings_service.effective(p) for p in PROTOCOLS}


def current_selection(services: list[ExtensionService],
                      settings: dict[str, ProtocolSettings] | None = None,
                      priorities: list[str] | None = None) -> Selection:
    """The protocol that connecting `services` would get with the current settings."""
    settings = settings or effective_all()
    priorities = priorities or settings_service.priorities()[0]
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
