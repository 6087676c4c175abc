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
from .resolve import MASKED, Saved, StoredFile


@dataclass
class State:
    """Saved configuration; secrets and private keys stay encrypted inside it."""

    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
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
        return Saved(values=dict(self.values.get(protocol, {})),
                     secrets={n: (decrypt(c) if reveal else MASKED) for n, c in secrets.items()},
                     files=files)

    def secret_plaintext(self, protocol: str, name: str) -> str | None:
        token = self.secrets.get(protocol, {}).get(name)
        return None if token is None else decrypt(token)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def read_state() -> State:
    """The saved configuration as it is in the database now."""
    state = State()
    for row in db.session.execute(db.select(BrokerSettings)).scalars():
        if row.values:
            state.values[row.protocol] = dict(row.values)
        if row.secrets:
            state.secrets[row.protocol] = dict(row.secrets)
    for item in db.session.execute(db.select(TlsFile)).scalars():
        state.files.setdefault(item.protocol, {})[item.slot] = {
            "filename": item.filename, "format": item.format, "certs_pem": item.certs_pem,
            "key_ciphertext": item.key_ciphertext, "uploaded_at": _iso(item.uploaded_at),
            "uploaded_by": item.uploaded_by}
    rows = db.session.execute(db.select(Priority).order_by(Priority.position)).scalars()
    state.priorities = [r.protocol for r in rows]
    return state


def write_state(state: State, actor: str | None, current: State | None = None) -> None:
    """Make the database hold `state` (added to the session; the caller commits); `current` is
    what the database holds now, when the caller has read it already."""
    current = current if current is not None else read_state()
    for protocol in PROTOCOLS:
        values = state.values.get(protocol, {})
        secrets = state.secrets.get(protocol, {})
        row = db.session.get(BrokerSettings, protocol)
        touched = (values != current.values.get(protocol, {})
                   or secrets != current.secrets.get(protocol, {}))
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
