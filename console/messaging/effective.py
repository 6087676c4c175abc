"""The read side of the settings: a saved State plus the environment, resolved once.

A `Snapshot` resolves each protocol at most once (masked and, when asked, revealed), and the snapshot of
what the database holds now is kept for the rest of the request (or CLI command) until a write replaces
it. Views, the API, the checks and the change pipeline all read through here.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

from flask import current_app, g, has_app_context
from sqlalchemy import select

from .. import certs
from ..brokers import PROTOCOLS
from ..extensions import db
from ..models import ConfigVersion
from . import references, rules
from .resolve import MASKED, ProtocolSettings, Saved, resolve, resolve_priorities
from .schema import ALIASES, FILE_SLOTS
from .state import State, read_state


class ProtocolUnknown(LookupError):
    """No such protocol."""


def check_protocol(protocol: str) -> str:
    """`protocol` if it is one of the five, else ProtocolUnknown."""
    if protocol not in PROTOCOLS:
        raise ProtocolUnknown(protocol)
    return protocol


def environment() -> Mapping[str, str]:
    """The environment the messaging overrides come from."""
    return os.environ


def environment_key() -> tuple[tuple[str, str], ...]:
    """The messaging variables of the environment, to tell when a kept snapshot is out of date."""
    return tuple(sorted((k, v) for k, v in environment().items()
                        if k.startswith("SP_") or k in ALIASES))


def _read_key_file(path: str) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise certs.CertError(f"{path} cannot be read: {exc.strerror}.") from None
    return _key_pem(data, path)


def _env_file_loader(reveal: bool):
    def load(path: str, slot: str) -> dict[str, Any]:
        if slot == "tls_key":
            if not reveal:
                if not Path(path).is_file():
                    raise certs.CertError(f"{path} does not exist or is not a file.")
                return {"path": path}
            return {"path": path, "key_pem": _read_key_file(path)}
        info = certs.load_pem_file(path)
        return {"path": path, "format": "PEM", "certs_pem": info.certs_pem,
                "certificates": [c.as_dict() for c in info.certificates]}
    return load


def _file_from_env_ref(path: str, slot: str, reveal: bool) -> dict[str, Any]:
    try:
        return _env_file_loader(reveal)(path, slot)
    except certs.CertError as exc:
        return {"path": path, "error": str(exc)}


def _key_pem(data: bytes, where: str) -> str:
    """An unencrypted PEM private key, normalised to PKCS#8 (CertError when `data` is not one)."""
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise certs.CertError(f"{where} is not an unencrypted PEM private key.") from None
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _pem_from_variable(name: str, slot: str, reveal: bool) -> dict[str, Any]:
    """TLS material held by the console's environment variable `name` (an `env:NAME` reference):
    the PEM text itself, read when used. The key is kept only when `reveal`."""
    where = f"The variable {name}"
    data = environment().get(name, "").encode()
    try:
        if slot == "tls_key":
            key_pem = _key_pem(data, where)
            return {"env": name, "key_pem": key_pem} if reveal else {"env": name}
        store = certs.parse_truststore(data, filename=name)
        if store.format != "PEM":
            raise certs.CertError(f"{where} holds {store.format}, not PEM text: put the PEM in it.")
    except certs.CertError as exc:
        text = str(exc)
        return {"env": name, "error": text if text.startswith(where) else f"{where}: {text}"}
    return {"env": name, "format": "PEM", "certs_pem": store.certs_pem,
            "certificates": [c.as_dict() for c in store.certificates]}


def _tls_from_reference(ref: str, slot: str, reveal: bool) -> dict[str, Any]:
    """TLS material a resolving reference points at: a PEM file (`file:`) or a variable holding
    the PEM (`env:`)."""
    if ref.startswith("env:"):
        return _pem_from_variable(ref[4:], slot, reveal)
    return _file_from_env_ref(ref[5:], slot, reveal)


def resolve_layer(protocol: str, layer: Saved, reveal: bool = False) -> ProtocolSettings:
    """Effective settings of one protocol from a saved layer and the environment."""
    check_protocol(protocol)
    settings = resolve(protocol, layer, environment(), _env_file_loader(reveal))
    for name, item in settings.fields.items():
        if not isinstance(item.value, references.SecretRef):
            continue
        if item.field.is_file:      # TLS material: a PEM file, or a variable holding the PEM
            found = references.status(item.value, environment(), reference_key(), False)
            item.reference = found
            item.value = (_tls_from_reference(item.value.ref, name, reveal) if found.resolves
                          else None)
            continue
        found = references.status(item.value, environment(), reference_key(), reveal)
        item.reference = found
        item.value = found.value if reveal else (MASKED if found.resolves else None)
    for slot in FILE_SLOTS:
        item = settings.fields[slot]
        if (item.source == "saved" and item.value and item.reference is None
                and "certs_pem" in item.value):
            item.value["certificates"] = [c.as_dict()
                                          for c in certs.describe_pem(item.value["certs_pem"])]
    return settings


def reference_key() -> bytes:
    """The key of the references' fingerprints: the console's SECRET_KEY."""
    if not has_app_context():
        return b"messaging-console"
    return str(current_app.config["SECRET_KEY"]).encode()


def unresolved(settings: ProtocolSettings) -> list[tuple[str, str]]:
    """(field, why) for every reference of `settings` that does not resolve now."""
    return [(name, r.reference.error or f"{r.reference.ref} does not resolve")
            for name, r in settings.fields.items()
            if r.reference is not None and not r.reference.resolves]


class Snapshot:
    """One saved State with the environment applied; every protocol resolved at most once."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.env_key = environment_key()
        self._masked: dict[str, ProtocolSettings] = {}
        self._revealed: dict[str, ProtocolSettings] = {}
        self._priorities: tuple[list[str], dict[str, Any]] | None = None
        self._base: Snapshot | None = None
        self._same: frozenset[str] = frozenset()
        self.memo: dict[Any, Any] = {}      # what readers derive from this snapshot, kept with it

    def derive(self, state: State) -> Snapshot:
        """A snapshot of `state` that shares this one's resolution of every protocol whose saved
        layer `state` leaves as it is (a change resolves only what it changes)."""
        snap = Snapshot(state)
        if snap.env_key == self.env_key:
            snap._base = self
            snap._same = frozenset(p for p in PROTOCOLS if _layer(self.state, p) == _layer(state, p))
        return snap

    def shares(self, protocol: str) -> bool:
        """True when `protocol` resolves as in the snapshot this one was derived from."""
        return protocol in self._same

    def seed(self, protocol: str, settings: ProtocolSettings, reveal: bool) -> None:
        """Keep settings already resolved from this snapshot's saved layer of `protocol`."""
        (self._revealed if reveal else self._masked)[protocol] = settings

    def settings(self, protocol: str, reveal: bool = False) -> ProtocolSettings:
        """Effective settings of `protocol` (secrets masked unless `reveal`)."""
        if self._base is not None and protocol in self._same:
            return self._base.settings(protocol, reveal)
        cache = self._revealed if reveal else self._masked
        if protocol not in cache:
            cache[protocol] = resolve_layer(protocol, self.state.saved(protocol, reveal), reveal)
        return cache[protocol]

    def all(self, reveal: bool = False) -> dict[str, ProtocolSettings]:
        """Effective settings of every protocol."""
        return {p: self.settings(p, reveal) for p in PROTOCOLS}

    def priorities(self) -> tuple[list[str], dict[str, Any]]:
        """Effective priority order and where it came from."""
        if self._priorities is None:
            self._priorities = resolve_priorities(self.state.priorities, environment())
        order, info = self._priorities
        return list(order), dict(info, saved=list(info["saved"]))

    def any(self, protocol: str) -> ProtocolSettings:
        """The settings of `protocol` for what secrets do not change (identity, enabling):
        whichever resolution is at hand, masked when none is."""
        if self._base is not None and protocol in self._same:
            return self._base.any(protocol)
        return self._revealed.get(protocol) or self.settings(protocol)

    def enabled(self) -> list[str]:
        """The enabled protocols."""
        return [p for p in PROTOCOLS if self.any(p).enabled]


def _layer(state: State, protocol: str) -> tuple[Any, Any, Any]:
    return (state.values.get(protocol) or {}, state.secrets.get(protocol) or {},
            state.files.get(protocol) or {})


_KEY = "console_snapshot"


def current() -> Snapshot:
    """The snapshot of the database as it is now, kept for the rest of this app context until
    `forget()` (every write calls it)."""
    if not has_app_context():
        return Snapshot(read_state())
    snap = g.get(_KEY)
    if snap is None or snap.env_key != environment_key():
        snap = _kept_snapshot()
        setattr(g, _KEY, snap)
    return snap


_KEPT = "console_snapshots"
_KEEP = 4
_REFERENCE = re.compile(r'"((?:file|env):[^"]+)"')


def _outside_inputs(state: State) -> tuple[str, ...]:
    """What resolving `state` reads besides the database and the SP_* values: its secret references
    and the files SP_*_FILE variables name."""
    found = set(_REFERENCE.findall(json.dumps(state.as_json(), default=str)))
    found |= {f"file:{v}" for k, v in environment().items() if k.startswith("SP_") and k.endswith("_FILE")}
    return tuple(sorted(found))


def _looked_at(refs: tuple[str, ...]) -> tuple[Any, ...]:
    """How each of `refs` stands now: an environment value's digest, a file's identity, size and time."""
    out: list[Any] = []
    for ref in refs:
        if ref.startswith("env:"):
            value = environment().get(ref[4:])
            out.append(None if value is None else hashlib.sha256(value.encode()).hexdigest())
            continue
        try:
            st = os.stat(ref[5:])
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


def _kept_snapshot() -> Snapshot:
    """The snapshot of the newest configuration version, kept by this process across requests (with
    everything derived from it, such as the services' documents) and keyed by that version's id and
    time and by the environment: every write of the configuration makes a new version, so a new key,
    and one light query tells whether the kept snapshot is still what the database holds. It is
    resolved again (without reading the database) when a secret reference or a file it reads moved."""
    newest = db.session.execute(select(ConfigVersion.id, ConfigVersion.created_at)
                                .order_by(ConfigVersion.id.desc()).limit(1)).first()
    if newest is None:       # nothing versioned yet: read it each time
        return Snapshot(read_state())
    key = (newest.id, newest.created_at, environment_key())
    kept: dict[Any, tuple[Snapshot, tuple[str, ...], tuple[Any, ...]]] = (
        current_app.extensions.setdefault(_KEPT, {}))
    entry = kept.get(key)
    if entry is not None:
        snap, refs, seen = entry
        now = _looked_at(refs)
        if now == seen:
            return snap
        snap = Snapshot(snap.state)
    else:
        snap = Snapshot(read_state())
        refs = _outside_inputs(snap.state)
        now = _looked_at(refs)
        while len(kept) >= _KEEP:
            kept.pop(next(iter(kept)), None)
    kept[key] = (snap, refs, now)
    return snap


def remember(snapshot: Snapshot) -> None:
    """Keep `snapshot` as what the database holds now (after a commit wrote its state)."""
    if has_app_context():
        setattr(g, _KEY, snapshot)


def forget() -> None:
    """Drop the kept snapshot: the stored configuration changed."""
    if has_app_context():
        g.pop(_KEY, None)


def effective(protocol: str, reveal: bool = False, saved: Saved | None = None) -> ProtocolSettings:
    """Effective settings of one protocol now (or of the saved layer `saved`)."""
    if saved is not None:
        return resolve_layer(protocol, saved, reveal)
    return current().settings(check_protocol(protocol), reveal)


def effective_all(reveal: bool = False) -> dict[str, ProtocolSettings]:
    """Effective settings of every protocol now."""
    return current().all(reveal)


def saved_layer(protocol: str, reveal: bool = False) -> Saved:
    """The saved settings of `protocol` now; secrets decrypted only when `reveal`."""
    return current().state.saved(protocol, reveal)


def priorities() -> tuple[list[str], dict[str, Any]]:
    """Effective priority order now and where it came from."""
    return current().priorities()


def findings(settings: ProtocolSettings) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Blocking errors by field and warnings, for candidate or current settings."""
    errors: dict[str, str] = {}
    warnings: list[tuple[str, str]] = []
    for item in rules.check(settings):
        from_env = all(settings.fields[n].source == "env" for n in item.fields)
        if item.severity == "error" and not from_env:
            target = item.target
            if settings.fields[target].source == "env":
                target = next(n for n in item.fields if settings.fields[n].source != "env")
            errors.setdefault(target, item.message)
        else:
            note = item.message if item.severity == "warning" else (
                f"The environment sets conflicting values: {item.message}")
            warnings.append((item.target, note))
    for name, r in settings.fields.items():
        if r.env_error:
            warnings.append((name, r.env_error))
        if r.conflict:
            warnings.append((name, r.conflict))
        if r.shadowed:
            warnings.append((name, f"The saved value is shadowed by {r.env_var}."))
    warnings += [(name, why) for name, why in unresolved(settings)]
    warnings += [("", note) for note in settings.notes]
    return errors, warnings
