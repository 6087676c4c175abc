"""One way to change the configuration, whoever asks (page, API, CLI import, rollback):

candidate State → diff of saved and effective values → impact on adapters → confirmation when
adapters are affected → write, new version, audit entry. Failed and unconfirmed attempts are audited
too. Secrets never leave this module in clear: diffs say only that they changed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from sqlalchemy import text

from .. import checks, signals
from ..audit import audit, record_rejection  # noqa: F401 - record_rejection: the pipeline's callers
from ..brokers import PROTOCOLS
from ..crypto import decrypt
from ..delivery import outbox, plans
from ..extensions import db
from ..messaging import references
from ..messaging.effective import Snapshot, current, findings, forget, remember
from ..messaging.identity import identity
from ..messaging.resolve import ProtocolSettings
from ..messaging.schema import ALIASES, FIELDS, PRIORITY_ENV, PROTOCOL_LABELS, SCHEMA
from ..messaging.selection import select_protocol
from ..messaging.state import ChangeConflict, State, rebase, write_state
from ..messaging.words import setting_value
from ..models import Adapter, AuditEntry, ConfigVersion, ExtensionService

SECRET_SHOWN = "changed"


@dataclass
class FieldChange:
    """One changed value; secrets carry no values."""

    protocol: str | None
    field: str
    old: Any
    new: Any
    secret: bool = False
    install_time: bool = True

    def as_dict(self) -> dict[str, Any]:
        if self.secret:
            return {"protocol": self.protocol, "field": self.field, "change": SECRET_SHOWN,
                    "install_time": self.install_time}
        return {"protocol": self.protocol, "field": self.field, "old": self.old, "new": self.new,
                "install_time": self.install_time}

    def label(self) -> str:
        where = f"{PROTOCOL_LABELS[self.protocol]} {self.field}" if self.protocol else self.field
        if self.secret:
            return f"{where}: {SECRET_SHOWN}"
        return f"{where}: {self._side(self.old)} → {self._side(self.new)}"

    @property
    def shown_old(self) -> str:
        """The old value as the version list and the audit log word it ("localhost (default)")."""
        return self._side(self.old)

    @property
    def shown_new(self) -> str:
        """The new value, worded like shown_old."""
        return self._side(self.new)

    def _side(self, value: Any) -> str:
        return setting_value(self.protocol, self.field, value)


@dataclass
class AdapterImpact:
    """What a change does to one adapter, and what to do about it."""

    adapter: str
    service: str
    protocol: str
    kind: str                  # breaks | diverges | protocol_changes
    reason: str
    action: str

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class Impact:
    """Every adapter a change affects, and services whose new adapters would get another protocol."""

    adapters: list[AdapterImpact] = field(default_factory=list)
    services: list[dict[str, Any]] = field(default_factory=list)
    notified: list[dict[str, Any]] = field(default_factory=list)

    @property
    def needs_confirmation(self) -> bool:
        return bool(self.adapters)

    def counts(self) -> dict[str, int]:
        out = {"breaks": 0, "diverges": 0, "protocol_changes": 0}
        for item in self.adapters:
            out[item.kind] += 1
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"adapters": [a.as_dict() for a in self.adapters], "services": self.services,
                "notified": self.notified, "counts": self.counts()}


@dataclass
class Outcome:
    """What a commit did: applied, unchanged, preview, confirm (needs confirmation)."""

    status: str
    saved_changes: list[FieldChange] = field(default_factory=list)
    effective_changes: list[FieldChange] = field(default_factory=list)
    impact: Impact = field(default_factory=Impact)
    version_id: int | None = None
    rollout: dict[str, Any] | None = None     # the roll-out plan (preview) or the roll-out started
    summary: str = ""                         # what the version is (or would be) labelled with

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "summary": self.summary,
                "changes": [c.as_dict() for c in self.saved_changes],
                "effective_changes": [c.as_dict() for c in self.effective_changes],
                "impact": self.impact.as_dict(), "version": self.version_id,
                "rollout": self.rollout}


def effective_of(state: State | Snapshot, reveal: bool = False) -> dict[str, ProtocolSettings]:
    """Effective settings of every protocol if `state` were saved."""
    snap = state if isinstance(state, Snapshot) else Snapshot(state)
    return snap.all(reveal)


def priorities_of(state: State | Snapshot) -> list[str]:
    """The effective priority order if `state` were saved."""
    snap = state if isinstance(state, Snapshot) else Snapshot(state)
    return snap.priorities()[0]


def _file_view(value: Any) -> Any:
    if not isinstance(value, dict) or not value:
        return None
    prints = [c["sha256"][:23] for c in value.get("certificates", [])]
    return f"{value.get('filename') or value.get('path')} [{', '.join(prints)}]"


def _plain(token: Any) -> Any:
    if references.stored(token):
        return dict(token)
    return None if token is None else decrypt(token)


def _reference_side(token: Any) -> str | None:
    """A saved secret entry as a change shows it: the reference itself, or words for a stored
    value (never the value)."""
    if token is None:
        return None
    return str(token["ref"]) if references.stored(token) else "(stored value)"


def saved_diff(old: State, new: State) -> list[FieldChange]:
    """What changed in the saved layer (what a person changed)."""
    out: list[FieldChange] = []
    for protocol in PROTOCOLS:
        fields = FIELDS[protocol]
        ov, nv = old.values.get(protocol, {}), new.values.get(protocol, {})
        for name in sorted(set(ov) | set(nv), key=list(fields).index):
            if ov.get(name) != nv.get(name):
                old_value, new_value = ov.get(name), nv.get(name)
                if references.stored(old_value) or references.stored(new_value):
                    old_value, new_value = _reference_side(old_value), _reference_side(new_value)
                out.append(FieldChange(protocol, name, old_value, new_value,
                                       install_time=fields[name].install_time))
        osec, nsec = old.secrets.get(protocol, {}), new.secrets.get(protocol, {})
        for name in sorted(set(osec) | set(nsec)):
            a, b = osec.get(name), nsec.get(name)
            if a == b or _plain(a) == _plain(b):
                continue
            if references.stored(a) or references.stored(b):
                out.append(FieldChange(protocol, name, _reference_side(a), _reference_side(b),
                                       install_time=fields[name].install_time))
            else:
                out.append(FieldChange(protocol, name, None, None, secret=True,
                                       install_time=fields[name].install_time))
        ofiles, nfiles = old.files.get(protocol, {}), new.files.get(protocol, {})
        for slot in sorted(set(ofiles) | set(nfiles)):
            a, b = ofiles.get(slot), nfiles.get(slot)
            if (a or {}).get("certs_pem") != (b or {}).get("certs_pem"):
                out.append(FieldChange(protocol, slot, (a or {}).get("filename"),
                                       (b or {}).get("filename")))
            if _plain((a or {}).get("key_ciphertext")) != _plain((b or {}).get("key_ciphertext")):
                out.append(FieldChange(protocol, "tls_key", None, None, secret=True))
    if old.priorities != new.priorities:
        out.append(FieldChange(None, "priorities", old.priorities, new.priorities))
    return out


def effective_diff(old: State | Snapshot, new: State | Snapshot) -> list[FieldChange]:
    """What changes in the effective settings (environment overrides applied)."""
    old = old if isinstance(old, Snapshot) else Snapshot(old)
    new = new if isinstance(new, Snapshot) else Snapshot(new)
    out: list[FieldChange] = []
    for protocol in PROTOCOLS:
        if new.shares(protocol):
            continue
        before, after = ({protocol: old.settings(protocol, True)},
                         {protocol: new.settings(protocol, True)})
        for name, f in FIELDS[protocol].items():
            a, b = before[protocol].fields[name], after[protocol].fields[name]
            if f.is_file and not f.secret:
                va, vb = _file_view(a.value), _file_view(b.value)
                if va != vb:
                    out.append(FieldChange(protocol, name, va, vb))
            elif f.secret:
                if a.value != b.value:
                    out.append(FieldChange(protocol, name, None, None, secret=True,
                                           install_time=f.install_time))
            elif a.value != b.value:
                out.append(FieldChange(protocol, name, a.value, b.value,
                                       install_time=f.install_time))
    po, pn = priorities_of(old), priorities_of(new)
    if po != pn:
        out.append(FieldChange(None, "priorities", po, pn))
    return out


class Endpoints:
    """Whether two address labels reach the same brokers (checks.same_endpoints), with the host
    names looked up before the configuration's write lock is taken (`ahead`, `prime`): under the
    lock (`resolving` False) a name not looked up before does not resolve, so a respelt address
    counts as another broker — no DNS is ever asked while the lock is held."""

    def __init__(self) -> None:
        self.hosts: dict[str, list[str]] = {}
        self.resolving = True

    def resolve(self, host: str, port: int) -> list[str]:
        if host not in self.hosts and self.resolving:
            try:
                self.hosts[host] = checks.system_resolver(host, port)
            except OSError:
                self.hosts[host] = []
        if not self.hosts.get(host):
            raise OSError(f"{host} does not resolve")
        return self.hosts[host]

    def same(self, a: str | None, b: str | None) -> bool:
        return checks.same_endpoints(a, b, resolver=self.resolve)

    def ahead(self, protocol: str, before: ProtocolSettings, after: ProtocolSettings) -> None:
        """Look up, now, what judging `protocol`'s adapters under `after` will need."""
        old, new = identity(before).get("address"), identity(after).get("address")
        if old == new and before.enabled == after.enabled:
            return
        rows = db.session.execute(db.select(Adapter.snapshot).where(Adapter.protocol == protocol))
        for (snapshot,) in rows:
            for address in {old, new}:
                self.same(snapshot.get("address"), address)

    def prime(self, before: Snapshot, after: Snapshot) -> None:
        """`ahead` for every protocol the change from `before` to `after` alters."""
        for protocol in PROTOCOLS:
            if not after.shares(protocol):
                self.ahead(protocol, before.settings(protocol, True), after.settings(protocol, True))


def _classify(snapshot: dict[str, Any], current: dict[str, Any], enabled: bool,
              secrets_changed: bool, protocol: str, endpoints: Endpoints) -> tuple[str, str]:
    label = PROTOCOL_LABELS[protocol]
    if not enabled:
        return "breaks", f"{label} is disabled."
    respelt = snapshot.get("address") != current.get("address")
    if respelt and not endpoints.same(snapshot.get("address"), current.get("address")):
        return "breaks", (f"The {label} broker moves from {snapshot.get('address')} to "
                          f"{current.get('address')}.")
    keys = sorted(k for k in set(snapshot) | set(current)
                  if k != "address" and snapshot.get(k) != current.get(k))
    if keys or secrets_changed or respelt:
        parts = ([f"address {snapshot.get('address')} (the same broker as "
                  f"{current.get('address')})"] if respelt else [])
        parts += keys + (["credentials"] if secrets_changed else [])
        return "diverges", f"Created with other {label} settings: {', '.join(parts)}."
    return "ok", ""


ACTIONS = {
    "breaks": "Recreate the adapter after the change (or keep the old broker address and the "
              "protocol enabled until it is migrated); until then it cannot connect.",
    "diverges": "It keeps running on the settings it was created with until it is recreated; "
                "recreate it to use the new ones.",
}


def assess(old: State | Snapshot, new: State | Snapshot, changes: list[FieldChange],
           endpoints: Endpoints | None = None) -> Impact:
    """Classify every adapter under the old and the new settings; report those the change affects.
    (Identities hold no secrets, so revealed settings serve as well as masked ones.)"""
    impact = Impact()
    endpoints = endpoints or Endpoints()
    old = old if isinstance(old, Snapshot) else Snapshot(old)
    new = new if isinstance(new, Snapshot) else Snapshot(new)
    services = db.session.execute(db.select(ExtensionService)).scalars().all()
    if not services:
        return impact
    secrets_changed = {p: any(c.secret and c.protocol == p and c.install_time for c in changes)
                       for p in PROTOCOLS}
    impact.notified = outbox.notified(old, new, services)
    names = {s.id: s.name for s in services}
    po, pn = priorities_of(old), priorities_of(new)
    on_before, on_after = old.enabled(), new.enabled()
    moved: dict[int, tuple[str | None, str | None]] = {}
    for s in services:
        a = select_protocol({s.name: s.protocols}, po, on_before).protocol
        b = select_protocol({s.name: s.protocols}, pn, on_after).protocol
        if a != b:
            moved[s.id] = (a, b)
            impact.services.append({"service": s.name, "from": a, "to": b})
    groups: dict[tuple[str, str], tuple[str, str]] = {}
    rows = db.session.execute(db.select(Adapter.name, Adapter.service_id, Adapter.protocol,
                                        Adapter.snapshot_hash, Adapter.snapshot)
                              .order_by(Adapter.name))
    for name, service_id, protocol, digest, snapshot in rows:
        key = (protocol, digest)
        if key not in groups and new.shares(protocol):
            groups[key] = ("ok", "")
        elif key not in groups:
            before, after = old.settings(protocol, True), new.settings(protocol, True)
            was = _classify(snapshot, identity(before), before.enabled, False, protocol, endpoints)
            now = _classify(snapshot, identity(after), after.enabled,
                            secrets_changed[protocol], protocol, endpoints)
            groups[key] = now if now[0] != "ok" and now != was else ("ok", "")
        kind, reason = groups[key]
        if kind != "ok":
            impact.adapters.append(AdapterImpact(name, names[service_id], protocol, kind, reason,
                                                 ACTIONS[kind]))
        elif service_id in moved and moved[service_id][0] == protocol:
            # it matched what new adapters of its service got, and no longer will; an adapter on
            # the protocol they get after the change (or one that differed already) is not affected
            a, b = moved[service_id]
            target = b or "no protocol (none enabled that it supports)"
            impact.adapters.append(AdapterImpact(
                name, names[service_id], protocol, "protocol_changes",
                f"New adapters of {names[service_id]} will use {target} instead of {a}.",
                f"This adapter stays on {protocol}; pipelines mixing old and new adapters of "
                f"{names[service_id]} will run on two protocols until this one is recreated."))
    return impact


def _version(state: State, actor: str, origin: str, summary: str) -> ConfigVersion:
    row = ConfigVersion(actor=actor[:80], origin=origin, summary=summary[:4000],
                        state=state.as_json())
    db.session.add(row)
    db.session.flush()
    return row


LOCK_KEY = 0x636F6E736F6C65     # "console": the advisory lock of configuration writers (PostgreSQL)


def locked() -> bool:
    """Whether this transaction holds the configuration's write lock."""
    transaction = db.session().get_transaction()
    return transaction is not None and db.session.info.get("console_config_lock") is transaction


def lock() -> None:
    """Hold the configuration's write lock until this transaction ends, and read what is saved
    from here on afresh: writers of the configuration run one after the other, so none builds on
    a configuration another is replacing (PostgreSQL: a transaction advisory lock; SQLite: the
    database's write lock, taken by a write that changes nothing). Taken once per transaction."""
    transaction = db.session().get_transaction()
    if transaction is not None and db.session.info.get("console_config_lock") is transaction:
        return
    db.session.flush()
    if db.engine.dialect.name == "postgresql":
        db.session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
    else:
        db.session.execute(text(f"UPDATE {ConfigVersion.__tablename__} SET id = id WHERE 1 = 0"))
    db.session.info["console_config_lock"] = db.session().get_transaction()
    db.session.expire_all()
    forget()


def release() -> None:
    """End the transaction that holds the write lock when a change saved nothing (the CLI's and
    the background's sessions live long; nobody else may write meanwhile)."""
    transaction = db.session().get_transaction()
    if transaction is not None and db.session.info.get("console_config_lock") is transaction:
        db.session.commit()


def _one_at_a_time(candidate: State, base: Snapshot,
                   seed: dict[str, tuple[ProtocolSettings, bool]] | None
                   ) -> tuple[State, Snapshot, dict[str, tuple[ProtocolSettings, bool]] | None]:
    """Under the write lock: the candidate, the snapshot it applies to and its seed — rebased onto
    what the database holds now when another process saved something since the candidate was made
    from `base` (its changes are kept, never overwritten; the seed no longer fits then)."""
    now = current()      # read since lock() took the lock (it drops what was read before): fresh
    if now is base or now.state.as_json() == base.state.as_json():
        return candidate, base, seed
    fresh = now.state
    merged = rebase(candidate, base.state, fresh)
    _still_valid(merged, candidate, now)
    return merged, now, None


def _still_valid(merged: State, candidate: State, fresh: Snapshot) -> None:
    """ChangeConflict when the rebased configuration has an error that neither the change alone
    nor what was saved meanwhile has (rules over fields the two saves changed separately)."""
    combined, alone = Snapshot(merged), Snapshot(candidate)
    errors: dict[str, str] = {}
    for protocol in PROTOCOLS:
        found = findings(combined.settings(protocol))[0]
        known = set(findings(alone.settings(protocol))[0]) | set(findings(fresh.settings(protocol))[0])
        errors.update({f"{protocol}.{name}": text for name, text in found.items() if name not in known})
    if errors:
        raise ChangeConflict(errors)


def _derive(before: Snapshot, candidate: State,
            seed: dict[str, tuple[ProtocolSettings, bool]] | None) -> Snapshot:
    after = before.derive(candidate)
    for protocol, (settings, reveal) in (seed or {}).items():
        after.seed(protocol, settings, reveal)
    return after


def commit(candidate: State, *, actor: str | None, origin: str, action: str,
           confirm: bool = False, dry_run: bool = False, summary: str = "",
           label: str = "", seed: dict[str, tuple[ProtocolSettings, bool]] | None = None,
           endpoints: Endpoints | None = None, ask: bool = False) -> Outcome:
    """Apply `candidate` through the impact check; see the module docstring. `seed` hands in
    settings already resolved from the candidate (protocol → (settings, revealed)); `endpoints`
    the host names a caller that locks first looked up before it did (Endpoints.ahead); `ask`:
    nothing is saved without `confirm` even when no adapter is affected (the page's roll-out plan
    is shown first).
    The version is labelled `summary`, else `label` followed by what the change does ("Rollback
    to version 3: Kafka port: 9093 → 9092 (default)"), else by what it does alone."""
    actor = actor or "unknown"
    if endpoints is None:
        endpoints = Endpoints()
        endpoints.resolving = not locked()
    before = current()       # what the candidate was made from (unless its writer locked first)
    after = _derive(before, candidate, seed)
    if not dry_run:
        if endpoints.resolving:
            endpoints.prime(before, after)       # DNS before the write lock, never under it
        lock()
        endpoints.resolving = False
        try:
            rebased, now, seed = _one_at_a_time(candidate, before, seed)
        except ChangeConflict as conflict:
            db.session.rollback()
            audit(action, "rejected", actor=actor, origin=origin,
                  protocols=sorted({name.split(".")[0] for name in conflict.errors}),
                  summary=str(conflict))
            db.session.commit()
            raise
        if now is not before:                # another process saved meanwhile
            candidate, before, after = rebased, now, _derive(now, rebased, seed)
    if candidate.as_json() == before.state.as_json():
        release()
        return Outcome("unchanged")
    saved = saved_diff(before.state, candidate)
    if not saved:
        release()
        return Outcome("unchanged")
    effective = effective_diff(before, after)
    impact = assess(before, after, saved, endpoints)
    protocols = sorted({c.protocol for c in saved if c.protocol})
    text = "; ".join(c.label() for c in saved)
    text = summary or (f"{label}: {text}" if label else text)
    outcome = Outcome("preview", saved, effective, impact, rollout=plans.preview(plans.proposed()),
                      summary=text)
    if dry_run:
        return outcome
    if (impact.needs_confirmation or ask) and not confirm:
        counts = impact.counts()
        why = (f"affects {len(impact.adapters)} adapter(s) "
               f"({', '.join(f'{v} {k}' for k, v in counts.items() if v)})"
               if impact.needs_confirmation else "its roll-out plan is to be confirmed")
        audit(action, "confirmation_required", actor=actor, origin=origin, protocols=protocols,
              summary=f"{text} — not saved: {why}", changes=saved)
        db.session.commit()
        outcome.status = "confirm"
        return outcome
    if db.session.execute(db.select(ConfigVersion.id).limit(1)).first() is None:
        _version(before.state, "console", "baseline",
                 "Configuration before the first recorded change")
    write_state(candidate, actor, before.state)
    version = _version(candidate, actor, origin, text)
    extra = ([{"impact": impact.counts(), "confirmed": True}] if impact.needs_confirmation else [])
    audit(action, "applied", actor=actor, origin=origin, protocols=protocols, summary=text,
          changes=saved, version_id=version.id, extra=extra)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    started = plans.begin(version.id, actor)      # before the outbox decides who is served what
    signals.version_written.send(app, snapshot=after, version=version.id)
    db.session.commit()
    remember(after)
    signals.version_committed.send(app, snapshot=after, version=version.id)
    outcome.status = "applied"
    outcome.version_id = version.id
    if started is not None:
        outcome.rollout = plans.document(started)
    return outcome


def environment_overrides() -> dict[str, str]:
    """Every messaging variable the environment sets now (secret values as "set")."""
    out: dict[str, str] = {}
    for protocol in PROTOCOLS:
        for f in SCHEMA[protocol]:
            value = os.environ.get(f.env_var(protocol), "")
            if value.strip():
                out[f.env_var(protocol)] = "set" if f.secret else value
    for name in (*ALIASES, PRIORITY_ENV):
        value = os.environ.get(name, "")
        if value.strip():
            out[name] = "set" if name != PRIORITY_ENV and "@" in value else value
    return out


def record_environment() -> AuditEntry | None:
    """At start-up: audit the environment overrides when they differ from the last ones recorded,
    and announce to every service whose document they change (one pipeline with every other
    change)."""
    entry = _audit_environment()
    app, snapshot = current_app._get_current_object(), current()  # type: ignore[attr-defined]
    signals.version_written.send(app, snapshot=snapshot, version=None)
    db.session.commit()
    signals.version_committed.send(app, snapshot=snapshot, version=None)
    return entry


def _audit_environment() -> AuditEntry | None:
    now = environment_overrides()
    last = db.session.execute(db.select(AuditEntry).where(AuditEntry.action == "environment")
                              .order_by(AuditEntry.id.desc()).limit(1)).scalar_one_or_none()
    before = {c["field"]: c.get("new") for c in (last.changes if last else [])
              if c.get("new") is not None}
    if last is not None and before == now:
        return None
    rows = [{"protocol": None, "field": name, "old": before.get(name), "new": now.get(name)}
            for name in sorted(set(before) | set(now)) if before.get(name) != now.get(name)]
    if last is None and not now:
        return None
    keep = [{"protocol": None, "field": n, "old": None, "new": v} for n, v in sorted(now.items())
            if n not in {r["field"] for r in rows}]
    entry = audit("environment", "applied", actor="environment", origin="env",
                  summary=("Environment overrides at start-up: " +
                           (", ".join(f"{r['field']}={r['new']}" for r in rows if r["new"])
                            or "none") + (f"; removed {', '.join(str(r['field']) for r in rows if not r['new'])}"
                                          if any(not r["new"] for r in rows) else "")),
                  extra=rows + keep)
    db.session.commit()
    return entry
