"""The whole saved configuration as one value: every protocol's values, encrypted secrets, TLS files
and the priority list. Versions store it; every change is a new State written in one transaction."""
from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from ..brokers import PROTOCOLS
from ..crypto import decrypt
from ..extensions import db
from ..models import BrokerSettings, Priority, TlsFile, utcnow
from . import references
from .resolve import MASKED, Saved, StoredFile


@dataclass
class State:
    """Saved configuration; secrets and private keys stay encrypted inside it."""

    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)   # ciphertext or reference
    files: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    priorities: list[str] = field(default_factory=list)

    def copy(self) -> State:
        return copy.deepcopy(self)

    def as_json(self) -> dict[str, Any]:
        """Plain JSON; protocols with nothing saved are left out, so equal states compare equal."""
        return {"values": {p: v for p, v in self.values.items() if v},
                "secrets": {p: v for p, v in self.secrets.items() if v},
                "files": {p: v for p, v in self.files.items() if v},
                "priorities": self.priorities}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> State:
        return cls(values=copy.deepcopy(data.get("values", {})),
                   secrets=copy.deepcopy(data.get("secrets", {})),
                   files=copy.deepcopy(data.get("files", {})),
                   priorities=list(data.get("priorities", [])))

    def saved(self, protocol: str, reveal: bool = False) -> Saved:
        """The resolver's saved layer for one protocol."""
        secrets = self.secrets.get(protocol, {})
        files = {}
        for slot, item in self.files.get(protocol, {}).items():
            key = item.get("key_ciphertext")
            files[slot] = StoredFile(
                filename=item["filename"], format=item["format"], certs_pem=item["certs_pem"],
                has_key=key is not None, key_pem=decrypt(key) if (reveal and key) else None,
                uploaded_at=item.get("uploaded_at"), uploaded_by=item.get("uploaded_by"))
        values = {k: references.SecretRef.from_json(v) if references.stored(v) else v
                  for k, v in self.values.get(protocol, {}).items()}
        return Saved(values=values,
                     secrets={n: _secret(c, reveal) for n, c in secrets.items()},
                     files=files)

    def secret_plaintext(self, protocol: str, name: str) -> str | None:
        token = self.secrets.get(protocol, {}).get(name)
        return None if token is None or references.stored(token) else decrypt(token)


def _secret(stored: Any, reveal: bool) -> Any:
    """A saved secret entry for the resolver: a reference as a SecretRef (resolved later), a
    ciphertext decrypted when `reveal`, else MASKED."""
    if references.stored(stored):
        return references.SecretRef.from_json(stored)
    return decrypt(stored) if reveal else MASKED


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def read_state(fresh: bool = False) -> State:
    """The saved configuration as it is in the database now (`fresh`: rows this session loaded
    before are read again, not taken from its identity map)."""
    options = {"populate_existing": True} if fresh else {}
    state = State()
    for row in db.session.execute(db.select(BrokerSettings).execution_options(**options)).scalars():
        if row.values:
            state.values[row.protocol] = dict(row.values)
        if row.secrets:
            state.secrets[row.protocol] = dict(row.secrets)
    for item in db.session.execute(db.select(TlsFile).execution_options(**options)).scalars():
        state.files.setdefault(item.protocol, {})[item.slot] = {
            "filename": item.filename, "format": item.format, "certs_pem": item.certs_pem,
            "key_ciphertext": item.key_ciphertext, "uploaded_at": _iso(item.uploaded_at),
            "uploaded_by": item.uploaded_by}
    rows = db.session.execute(db.select(Priority).order_by(Priority.position)
                              .execution_options(**options)).scalars()
    state.priorities = [r.protocol for r in rows]
    return state


_ABSENT = object()


def rebase(candidate: State, base: State, onto: State) -> State:
    """`candidate`, made from `base`, replayed onto `onto` (what another worker or replica saved in
    the meantime): every value, secret and file the candidate changed from `base`, and the priority
    list when it changed it, over `onto`'s; what the candidate left alone stays as in `onto`."""
    out = onto.copy()
    for part in ("values", "secrets", "files"):
        mine, old, target = getattr(candidate, part), getattr(base, part), getattr(out, part)
        for protocol in set(mine) | set(old):
            a, b = mine.get(protocol, {}), old.get(protocol, {})
            merged = target.setdefault(protocol, {})
            for key in set(a) | set(b):
                if a.get(key, _ABSENT) == b.get(key, _ABSENT):
                    continue
                if key in a:
                    merged[key] = copy.deepcopy(a[key])
                else:
                    merged.pop(key, None)
            if part == "values":
                target[protocol] = {k: merged[k] for k in sorted(merged)}
            if not target[protocol]:
                target.pop(protocol)
    if candidate.priorities != base.priorities:
        out.priorities = list(candidate.priorities)
    return out


def write_state(state: State, actor: str | None, current: State | None = None) -> None:
    """Make the database hold `state` (added to the session; the caller commits); `current` is
    what the database holds now, when the caller has read it already."""
    current = current if current is not None else read_state()
    for protocol in PROTOCOLS:
        values = state.values.get(protocol, {})
        secrets = state.secrets.get(protocol, {})
        touched = (values != current.values.get(protocol, {})
                   or secrets != current.secrets.get(protocol, {}))
        saved = protocol in current.values or protocol in current.secrets
        # a protocol's row is read only when it changes, or when files need one it may not have yet
        row = None
        if touched or (state.files.get(protocol) and not saved):
            row = db.session.get(BrokerSettings, protocol)
            if row is None and (values or secrets or state.files.get(protocol)):
                row = BrokerSettings(protocol=protocol, values={}, secrets={})
                db.session.add(row)
                touched = True
        if row is not None and touched:
            row.values = {k: values[k] for k in sorted(values)}
            row.secrets = dict(secrets)
            row.updated_by = actor
        db.session.flush()
        old_files = current.files.get(protocol, {})
        new_files = state.files.get(protocol, {})
        for slot in set(old_files) | set(new_files):
            if old_files.get(slot) == new_files.get(slot):
                continue
            existing = db.session.execute(db.select(TlsFile).where(
                TlsFile.protocol == protocol, TlsFile.slot == slot)).scalar_one_or_none()
            if slot not in new_files:
                if existing is not None:
                    db.session.delete(existing)
                continue
            item = new_files[slot]
            existing = existing or TlsFile(protocol=protocol, slot=slot)
            existing.filename = item["filename"]
            existing.format = item["format"]
            existing.certs_pem = item["certs_pem"]
            existing.key_ciphertext = item.get("key_ciphertext")
            uploaded = item.get("uploaded_at")
            existing.uploaded_at = dt.datetime.fromisoformat(uploaded) if uploaded else utcnow()
            existing.uploaded_by = item.get("uploaded_by")
            db.session.add(existing)
    if state.priorities != current.priorities:
        db.session.execute(db.delete(Priority))
        db.session.flush()
        for position, protocol in enumerate(state.priorities):
            db.session.add(Priority(protocol=protocol, position=position))
    db.session.flush()


class ChangeConflict(Exception):
    """A change that was valid on the configuration it was made from is not valid together with
    what another worker or replica saved meanwhile; nothing is saved."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("Another save changed this configuration meanwhile, and together with it "
                         "this change is not valid (" + "; ".join(f"{k}: {v}" for k, v in
                                                             errors.items()) +
                         "). Nothing was saved: reload and repeat the change.")
