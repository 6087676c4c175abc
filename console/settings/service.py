"""Reading and changing the messaging settings. Views, the API and the CLI call these; this module
owns the database session and the commits."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .. import certs
from ..brokers import PROTOCOLS
from ..crypto import encrypt
from ..extensions import db
from ..models import Priority, utcnow
from . import rules
from .resolve import ProtocolSettings, Saved, resolve, resolve_priorities
from .schema import FIELDS, FILE_SLOTS, SCHEMA
from .values import Invalid, parse_value


class ProtocolUnknown(LookupError):
    """No such protocol."""


@dataclass
class ChangeResult:
    """Outcome of a change: errors by field (nothing saved when any), warnings, what changed."""

    errors: dict[str, str] = field(default_factory=dict)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    settings: ProtocolSettings | None = None
    outcome: Any = None

    @property
    def ok(self) -> bool:
        return not self.errors and not self.needs_confirmation

    @property
    def needs_confirmation(self) -> bool:
        return self.outcome is not None and self.outcome.status == "confirm"


def check_protocol(protocol: str) -> str:
    """`protocol` if it is one of the five, else ProtocolUnknown."""
    if protocol not in PROTOCOLS:
        raise ProtocolUnknown(protocol)
    return protocol


def saved_layer(protocol: str, reveal: bool = False) -> Saved:
    """The saved settings of `protocol`; secrets decrypted only when `reveal`."""
    from .state import read_state

    return read_state().saved(protocol, reveal)


def _env() -> Mapping[str, str]:
    return os.environ


def _read_key_file(path: str) -> str:
    from cryptography.hazmat.primitives import serialization

    try:
        data = Path(path).read_bytes()
        key = serialization.load_pem_private_key(data, password=None)
    except OSError as exc:
        raise certs.CertError(f"{path} cannot be read: {exc.strerror}.") from None
    except (ValueError, TypeError):
        raise certs.CertError(f"{path} is not an unencrypted PEM private key.") from None
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


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


def effective(protocol: str, reveal: bool = False,
              saved: Saved | None = None) -> ProtocolSettings:
    """Effective settings of one protocol (secrets masked unless `reveal`)."""
    check_protocol(protocol)
    layer = saved if saved is not None else saved_layer(protocol, reveal)
    settings = resolve(protocol, layer, _env(), _env_file_loader(reveal))
    for slot in FILE_SLOTS:
        item = settings.fields[slot]
        if item.source == "saved" and item.value:
            item.value["certificates"] = [c.as_dict()
                                          for c in certs.describe_pem(item.value["certs_pem"])]
    return settings


def effective_all(reveal: bool = False) -> dict[str, ProtocolSettings]:
    """Effective settings of every protocol."""
    return {p: effective(p, reveal) for p in PROTOCOLS}


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
    warnings += [("", note) for note in settings.notes]
    return errors, warnings


@dataclass
class Prepared:
    """Validated but unsaved changes: the candidate settings and what would change."""

    errors: dict[str, str] = field(default_factory=dict)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    parsed: dict[str, Any] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)
    saved: Saved | None = None
    settings: ProtocolSettings | None = None

    def install_time_changes(self) -> list[str]:
        """The changed fields that adapters have baked in."""
        protocol = self.settings.protocol if self.settings else ""
        return [n for n in self.changed if FIELDS[protocol][n].install_time]


def env_locked(protocol: str) -> set[str]:
    """Fields of `protocol` that an environment variable sets."""
    return {n for n, r in effective(protocol).fields.items() if r.source == "env"}


def prepare_changes(protocol: str, changes: Mapping[str, Any], reveal: bool = False,
                    saved: Saved | None = None) -> Prepared:
    """Validate `changes` (field → raw value; None resets to the default or clears a secret)
    against the saved layer (or `saved`) and the environment, without saving."""
    check_protocol(protocol)
    prep = Prepared()
    current = effective(protocol)
    saved = saved if saved is not None else saved_layer(protocol, reveal)
    old_values, old_secrets = dict(saved.values), set(saved.secrets)
    for name, raw in changes.items():
        f = FIELDS[protocol].get(name)
        if f is None:
            prep.errors[name] = f"{protocol} has no field '{name}'."
        elif f.is_file:
            prep.errors[name] = "Upload TLS files through the file upload, not as a value."
        elif current.fields[name].source == "env":
            prep.errors[name] = (f"Locked: set by the environment variable "
                                 f"{current.fields[name].env_var}.")
        elif raw is None:
            prep.parsed[name] = None
        else:
            try:
                prep.parsed[name] = parse_value(f, raw)
            except Invalid as exc:
                prep.errors[name] = str(exc)
    if prep.errors:
        return prep
    for name, value in prep.parsed.items():
        f = FIELDS[protocol][name]
        if f.secret:
            if value is None:
                saved.secrets.pop(name, None)
            else:
                saved.secrets[name] = value
            if value is not None or name in old_secrets:
                prep.changed.append(name)
            continue
        if value is None or value == f.default or (value == "" and f.default is None):
            saved.values.pop(name, None)
        else:
            saved.values[name] = value
        if old_values.get(name) != saved.values.get(name):
            prep.changed.append(name)
    prep.saved = saved
    prep.settings = effective(protocol, reveal=reveal, saved=saved)
    prep.errors, prep.warnings = findings(prep.settings)
    return prep


def _commit(candidate: Any, result: ChangeResult, *, actor: str | None, origin: str,
            action: str, confirm: bool, protocol: str | None) -> ChangeResult:
    from .changes import commit

    outcome = commit(candidate, actor=actor, origin=origin, action=action, confirm=confirm)
    result.outcome = outcome
    result.changed = sorted({c.field for c in outcome.saved_changes if c.field != "priorities"}
                            | ({"priorities"} if any(c.field == "priorities"
                                                     for c in outcome.saved_changes) else set()))
    if outcome.status == "confirm":
        result.changed = []
    if protocol:
        result.settings = effective(protocol)
    return result


def _rejected(result: ChangeResult, *, actor: str | None, origin: str, action: str,
              protocol: str | None) -> ChangeResult:
    from .changes import record_rejection

    record_rejection(action, actor=actor, origin=origin, protocol=protocol, errors=result.errors)
    return result


def candidate_state(protocol: str, prep: Prepared):
    """The whole saved configuration with prepared changes of one protocol applied."""
    from .state import read_state

    candidate = read_state()
    candidate.values[protocol] = {k: prep.saved.values[k] for k in sorted(prep.saved.values)}
    secrets = candidate.secrets.setdefault(protocol, {})
    for name, value in prep.parsed.items():
        if FIELDS[protocol][name].secret:
            if value is None:
                secrets.pop(name, None)
            else:
                secrets[name] = encrypt(value)
    if not secrets:
        candidate.secrets.pop(protocol, None)
    if not candidate.values[protocol]:
        candidate.values.pop(protocol)
    return candidate


def apply_changes(protocol: str, changes: Mapping[str, Any], actor: str | None, *,
                  origin: str = "console", confirm: bool = False) -> ChangeResult:
    """Validate `changes` and save them all, or nothing when any is invalid; when adapters are
    affected, nothing is saved without `confirm`."""
    prep = prepare_changes(protocol, changes)
    result = ChangeResult(errors=prep.errors, warnings=prep.warnings, settings=prep.settings)
    if prep.errors:
        return _rejected(result, actor=actor, origin=origin, action="update", protocol=protocol)
    candidate = candidate_state(protocol, prep)
    return _commit(candidate, result, actor=actor, origin=origin, action="update",
                   confirm=confirm, protocol=protocol)


def upload_file(protocol: str, slot: str, data: bytes, *, filename: str = "",
                password: str | None = None, key_data: bytes | None = None,
                key_password: str | None = None, actor: str | None = None,
                origin: str = "console", confirm: bool = False) -> ChangeResult:
    """Parse and store a truststore (slot tls_ca) or a client certificate with its key (tls_cert)."""
    from .state import read_state

    check_protocol(protocol)
    result = ChangeResult()
    if slot not in FILE_SLOTS:
        result.errors[slot] = f"No file slot '{slot}': use tls_ca or tls_cert."
        return result
    current = effective(protocol)
    if current.fields[slot].source == "env":
        result.errors[slot] = f"Locked: set by the environment variable {current.fields[slot].env_var}."
        return _rejected(result, actor=actor, origin=origin, action="upload", protocol=protocol)
    try:
        if slot == "tls_ca":
            parsed = certs.parse_truststore(data, password or None, filename=filename)
            key_pem = None
        else:
            parsed = certs.parse_keystore(data, password or None, key_data=key_data,
                                          key_password=key_password or None, filename=filename)
            key_pem = parsed.key_pem
    except certs.CertError as exc:
        result.errors[slot] = str(exc)
        return _rejected(result, actor=actor, origin=origin, action="upload", protocol=protocol)
    candidate = read_state()
    candidate.files.setdefault(protocol, {})[slot] = {
        "filename": (filename or "upload")[:255], "format": parsed.format,
        "certs_pem": parsed.certs_pem, "key_ciphertext": encrypt(key_pem) if key_pem else None,
        "uploaded_at": utcnow().isoformat(), "uploaded_by": actor}
    _commit(candidate, result, actor=actor, origin=origin, action="upload", confirm=confirm,
            protocol=protocol)
    if result.ok:
        result.warnings = findings(result.settings)[1]
    return result


def delete_file(protocol: str, slot: str, actor: str | None = None, *, origin: str = "console",
                confirm: bool = False) -> ChangeResult:
    """Remove a stored truststore or client certificate."""
    from .state import read_state

    check_protocol(protocol)
    result = ChangeResult()
    if slot not in FILE_SLOTS:
        result.errors[slot] = f"No file slot '{slot}': use tls_ca or tls_cert."
        return result
    candidate = read_state()
    candidate.files.get(protocol, {}).pop(slot, None)
    return _commit(candidate, result, actor=actor, origin=origin, action="remove_file",
                   confirm=confirm, protocol=protocol)


def saved_priorities() -> list[str]:
    """The saved priority order (empty when never saved)."""
    rows = db.session.execute(db.select(Priority).order_by(Priority.position)).scalars()
    return [r.protocol for r in rows]


def priorities() -> tuple[list[str], dict[str, Any]]:
    """Effective priority order and where it came from."""
    return resolve_priorities(saved_priorities(), _env())


def validate_priorities(order: Any) -> str | None:
    """Why `order` is not a valid priority list, or None."""
    if not isinstance(order, list) or not all(isinstance(p, str) for p in order):
        return "Give the priorities as a list of protocol names."
    unknown = [p for p in order if p not in PROTOCOLS]
    if unknown:
        return f"Unknown protocol: {', '.join(unknown)}. Use {', '.join(PROTOCOLS)}."
    if sorted(order) != sorted(PROTOCOLS):
        missing = [p for p in PROTOCOLS if p not in order]
        twice = sorted({p for p in order if order.count(p) > 1})
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing))
        if twice:
            parts.append("listed twice " + ", ".join(twice))
        return f"List every protocol exactly once ({'; '.join(parts)})."
    return None


def set_priorities(order: Any, actor: str | None = None, *, origin: str = "console",
                   confirm: bool = False) -> ChangeResult:
    """Save a new priority order: every protocol exactly once."""
    from .state import read_state

    result = ChangeResult()
    error = validate_priorities(order)
    if error:
        result.errors["priorities"] = error
        return _rejected(result, actor=actor, origin=origin, action="priorities", protocol=None)
    candidate = read_state()
    candidate.priorities = list(order)
    return _commit(candidate, result, actor=actor, origin=origin, action="priorities",
                   confirm=confirm, protocol=None)


def move_priority(protocol: str, direction: str, actor: str | None = None, *,
                  origin: str = "console", confirm: bool = False) -> ChangeResult:
    """Move one protocol up or down in the saved order."""
    check_protocol(protocol)
    order = priorities()[1]["saved"]
    index = order.index(protocol)
    target = index - 1 if direction == "up" else index + 1
    if 0 <= target < len(order):
        order[index], order[target] = order[target], order[index]
    return set_priorities(order, actor, origin=origin, confirm=confirm)


def schema_fields(protocol: str):
    """The fields of `protocol` in display order."""
    return SCHEMA[check_protocol(protocol)]
