"""No lost updates: what someone else changed since a form was opened or a document was read.

The page's section form carries the configuration version it was loaded from; the API's ETag is a
digest of one protocol's saved settings. Both are judged against the database under the pipeline's
write lock (settings.changes.lock), so two saves never both build on the same configuration: a save
applies only the fields its operator changed, over whatever is saved now, and is refused when one of
them was changed by the other save too.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..extensions import db
from ..messaging.effective import Snapshot, _layer, current
from ..messaging.schema import FIELDS, PROTOCOL_LABELS
from ..messaging.state import State
from ..messaging.values import Invalid, parse_value
from ..messaging.words import word
from ..models import ConfigVersion
from .changes import FieldChange, saved_diff

SCAN_LIMIT = 200       # versions looked through to find the one an ETag was read from


def current_version() -> int:
    """The newest configuration version (0 before the first change)."""
    return db.session.execute(db.select(db.func.max(ConfigVersion.id))).scalar() or 0


def state_at(version: int) -> State | None:
    """The saved configuration as of `version` (0: before the first change), or None if unknown."""
    if version == 0:
        first = db.session.execute(db.select(ConfigVersion).order_by(ConfigVersion.id)
                                   .limit(1)).scalar_one_or_none()
        if first is None:
            return current().state
        return State.from_json(first.state) if first.origin == "baseline" else None
    row = db.session.get(ConfigVersion, version)
    return State.from_json(row.state) if row is not None else None


def etag(protocol: str, state: State | None = None) -> str:
    """The ETag of one protocol's saved settings (values, encrypted secrets, TLS files)."""
    layer = _layer(state if state is not None else current().state, protocol)
    text = json.dumps(layer, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{protocol}\n{text}".encode()).hexdigest()[:32]


@dataclass
class FieldConflict:
    """A field both saves changed: what the form was opened with, what its operator typed, and
    what the other save left in it."""

    field: str
    loaded: str
    yours: str
    now: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Conflict:
    """Someone else changed the protocol since the form was opened or the document read."""

    protocol: str
    since: list[FieldChange] = field(default_factory=list)     # their changes of this protocol
    fields: list[FieldConflict] = field(default_factory=list)  # (page) fields both changed
    authors: list[str] = field(default_factory=list)           # "v14 by bob (api)"
    etag: str = ""
    typed: dict[str, Any] = field(default_factory=dict)        # (page) what its operator changed

    def message(self, since: str = "you opened it") -> str:
        who = f" ({', '.join(self.authors)})" if self.authors else ""
        return (f"{PROTOCOL_LABELS[self.protocol]} was changed by someone else since {since}"
                f"{who}: nothing was saved.")

    def as_dict(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "changes": [c.as_dict() for c in self.since],
                "by": self.authors, "conflicts": [f.as_dict() for f in self.fields]}


def _authors(protocol: str, after: int) -> list[str]:
    """Who saved the versions after `after` that changed `protocol` (newest last)."""
    rows = db.session.execute(db.select(ConfigVersion).where(ConfigVersion.id >= max(after, 1))
                              .order_by(ConfigVersion.id).limit(SCAN_LIMIT)).scalars().all()
    out, previous = [], None
    for row in rows:
        if row.id > after and previous is not None and \
                _layer(State.from_json(previous), protocol) != _layer(State.from_json(row.state),
                                                                      protocol):
            out.append(f"v{row.id} by {row.actor} ({row.origin})")
        previous = row.state
    return out


def _of(protocol: str, base: State, now: State) -> list[FieldChange]:
    return [c for c in saved_diff(base, now) if c.protocol == protocol]


def _same(a: Any, b: Any) -> bool:
    return a == b or (a in ("", None) and b in ("", None))


def operator_changes(protocol: str, submitted: Mapping[str, Any], base: State) -> dict[str, Any]:
    """The fields of a whole-form submission that its operator changed: those whose value differs
    from what the form was opened with (`base`). A typed or cleared secret is always a change; a
    value that does not parse is kept, so that validation names it."""
    opened = Snapshot(base).settings(protocol)
    out: dict[str, Any] = {}
    for name, raw in submitted.items():
        f = FIELDS[protocol].get(name)
        if f is None or f.secret or name not in opened.fields:
            out[name] = raw
            continue
        try:
            value = parse_value(f, raw)
        except Invalid:
            out[name] = raw
            continue
        if not _same(value, opened.fields[name].value):
            out[name] = raw
    return out


def judge(protocol: str, changes: dict[str, Any], base: State, base_version: int) -> Conflict | None:
    """Against what is saved now (call it under the write lock): None when nobody else changed
    `protocol` since `base`; else the Conflict, with `fields` naming the ones `changes` also
    changes. Changes equal to what the other save left are dropped from `changes` (no-ops)."""
    now = current()
    since = _of(protocol, base, now.state)
    if not since:
        return None
    conflict = Conflict(protocol, since, authors=_authors(protocol, base_version),
                        typed={k: v for k, v in changes.items()
                               if k in FIELDS[protocol] and not FIELDS[protocol][k].secret})
    theirs = {c.field for c in since}
    opened, present = Snapshot(base).settings(protocol), now.settings(protocol)
    for name in [n for n in changes if n in theirs]:
        f = FIELDS[protocol].get(name)
        if f is None:
            continue
        if f.secret:
            conflict.fields.append(FieldConflict(name, "(secret)", "(secret, typed)",
                                                 "(secret, changed)"))
            continue
        try:
            value = parse_value(f, changes[name]) if changes[name] is not None else f.default
        except Invalid:
            value = changes[name]
        if _same(value, present.fields[name].value):
            del changes[name]
            continue
        conflict.fields.append(FieldConflict(name, word(opened.fields[name].value),
                                             word(changes[name]),
                                             word(present.fields[name].value)))
    return conflict


def judge_etag(protocol: str, tags: list[str]) -> Conflict | None:
    """None when one of `tags` (or "*") is the protocol's ETag now; else the Conflict, with what
    changed since the version the caller's ETag was read at, when that version is found."""
    now = etag(protocol)
    if "*" in tags or now in tags:
        return None
    conflict = Conflict(protocol, etag=now)
    rows = db.session.execute(db.select(ConfigVersion).order_by(ConfigVersion.id.desc())
                              .limit(SCAN_LIMIT)).scalars()
    for row in rows:
        state = State.from_json(row.state)
        if etag(protocol, state) in tags:
            conflict.since = _of(protocol, state, current().state)
            conflict.authors = _authors(protocol, row.id)
            break
    return conflict
