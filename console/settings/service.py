"""Changing the messaging settings: validation of what a person asks for, and the candidate
configuration handed to the change pipeline (settings.changes). Views, the API and the CLI call these.
Reading goes through settings.effective (re-exported here for callers that do both)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from .. import certs
from ..brokers import PROTOCOLS
from ..crypto import encrypt
from ..extensions import db
from ..messaging import references
from ..messaging.effective import (  # noqa: F401  - the read side, re-exported for the views
    ProtocolUnknown,
    check_protocol,
    current,
    effective,
    effective_all,
    environment,
    findings,
    priorities,
    reference_key,
    saved_layer,
)
from ..messaging.resolve import ProtocolSettings, Saved
from ..messaging.schema import FIELDS, FILE_SLOTS, SCHEMA
from ..messaging.values import Invalid, parse_value
from ..models import Adapter, utcnow
from . import changes as pipeline
from . import conflicts
from .conflicts import Conflict, current_version, etag, judge_etag  # noqa: F401 - views, API


@dataclass
class ChangeResult:
    """Outcome of a change: errors by field (nothing saved when any), warnings, what changed."""

    errors: dict[str, str] = field(default_factory=dict)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    settings: ProtocolSettings | None = None
    outcome: Any = None
    conflict: Conflict | None = None       # refused: changed by someone else since it was read
    merged: list[Any] = field(default_factory=list)   # others' changes kept beside this one's

    @property
    def ok(self) -> bool:
        return not self.errors and not self.needs_confirmation and self.conflict is None

    @property
    def needs_confirmation(self) -> bool:
        return self.outcome is not None and self.outcome.status == "confirm"


@dataclass
class Prepared:
    """Validated but unsaved changes: the candidate settings and what would change."""

    errors: dict[str, str] = field(default_factory=dict)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    parsed: dict[str, Any] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)
    saved: Saved | None = None
    settings: ProtocolSettings | None = None
    revealed: bool = False
    based_on: dict[str, Any] | None = None     # the saved configuration it was prepared against

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
    prep = Prepared(based_on=current().state.as_json() if saved is None else None)
    now = effective(protocol)
    saved = saved if saved is not None else saved_layer(protocol, reveal)
    old_values, old_secrets = dict(saved.values), set(saved.secrets)
    for name, raw in changes.items():
        f = FIELDS[protocol].get(name)
        if f is None:
            prep.errors[name] = f"{protocol} has no field '{name}'."
        elif f.is_file and references.is_reference(raw) and now.fields[name].source != "env":
            try:
                ref = references.parse_reference(raw)
            except Invalid as exc:
                prep.errors[name] = str(exc)
                continue
            prep.parsed[name] = references.SecretRef(ref)
        elif f.is_file and raw is None and isinstance(
                (saved.secrets if f.secret else saved.values).get(name), references.SecretRef):
            prep.parsed[name] = None                    # clears the reference
        elif f.is_file:
            prep.errors[name] = ("Upload TLS files through the file upload, or give a reference "
                                 "(file:/path to a PEM file, env:NAME of a variable holding the "
                                 "PEM), not a value.")
        elif now.fields[name].source == "env":
            prep.errors[name] = (f"Locked: set by the environment variable "
                                 f"{now.fields[name].env_var}.")
        elif raw is None:
            prep.parsed[name] = None
        elif f.secret and references.is_reference(raw):
            try:
                prep.parsed[name] = references.SecretRef(references.parse_reference(raw))
            except Invalid as exc:
                prep.errors[name] = str(exc)
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
    prep.revealed = reveal
    prep.settings = effective(protocol, reveal=reveal, saved=saved)
    prep.errors, prep.warnings = findings(prep.settings)
    return prep


def _commit(candidate: Any, result: ChangeResult, *, actor: str | None, origin: str,
            action: str, confirm: bool, protocol: str | None,
            seed: dict[str, Any] | None = None,
            endpoints: pipeline.Endpoints | None = None, summary: str = "",
            ask: bool = False) -> ChangeResult:
    outcome = pipeline.commit(candidate, actor=actor, origin=origin, action=action,
                              confirm=confirm, seed=seed, endpoints=endpoints, summary=summary,
                              ask=ask)
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
    pipeline.record_rejection(action, actor=actor, origin=origin, protocol=protocol, errors=result.errors)
    return result


def candidate_state(protocol: str, prep: Prepared):
    """The whole saved configuration with prepared changes of one protocol applied."""
    candidate = current().state.copy()
    assert prep.saved is not None, "candidate_state needs a prepared change without errors"
    before = candidate.values.get(protocol, {})
    candidate.values[protocol] = {
        k: (stored_reference(v, before.get(k)) if isinstance(v, references.SecretRef) else v)
        for k, v in sorted(prep.saved.values.items())}
    for name, value in prep.parsed.items():      # a reference replaces the uploaded file of its slot
        if isinstance(value, references.SecretRef) and name in FILE_SLOTS:
            candidate.files.get(protocol, {}).pop(name, None)
    secrets = candidate.secrets.setdefault(protocol, {})
    for name, value in prep.parsed.items():
        if FIELDS[protocol][name].secret:
            if value is None:
                secrets.pop(name, None)
            elif isinstance(value, references.SecretRef):
                secrets[name] = stored_reference(value, secrets.get(name))
            else:
                secrets[name] = encrypt(value)
    if not secrets:
        candidate.secrets.pop(protocol, None)
    if not candidate.values[protocol]:
        candidate.values.pop(protocol)
    return candidate


def stored_reference(item: references.SecretRef, before: Any) -> dict[str, Any]:
    """How the saved configuration keeps a reference: with the fingerprint of what it resolves to
    now (kept from `before` when that is the same reference resolving to the same value)."""
    found = references.status(item, environment(), reference_key(), reveal=False)
    if references.stored(before) and before["ref"] == item.ref and before.get("seen") == found.fingerprint:
        return dict(before)
    return references.SecretRef(item.ref, found.fingerprint,
                                references.now_iso() if found.resolves else None).as_json()


@dataclass
class Base:
    """What a change was made from: the configuration version a form was opened with (the form
    sends every field; only those its operator changed are applied), or the ETags a caller read
    (If-Match)."""

    version: int | None = None
    etags: list[str] | None = None


def apply_changes(protocol: str, changes: Mapping[str, Any], actor: str | None, *,
                  origin: str = "console", confirm: bool = False,
                  prepared: Prepared | None = None, base: Base | None = None,
                  ask: bool = False) -> ChangeResult:
    """Validate `changes` (or take them `prepared` already) and save them all, or nothing when
    any is invalid; when adapters are affected (or `ask`), nothing is saved without `confirm`.
    With `base`, nothing is saved over a change someone else made since (see settings.conflicts)."""
    endpoints = pipeline.Endpoints()
    if not pipeline.locked():      # validated and looked up before the lock; again only if stale
        if prepared is None and (base is None or base.version is None):
            prepared = prepare_changes(protocol, changes)
        if prepared is not None and not prepared.errors and prepared.settings is not None:
            endpoints.ahead(protocol, current().settings(protocol, True), prepared.settings)
    pipeline.lock()
    changes = dict(changes)
    merged: list[Any] = []
    if base is not None and base.etags is not None:
        conflict = conflicts.judge_etag(protocol, base.etags)
        if conflict is not None:
            return _conflicted(ChangeResult(conflict=conflict), actor=actor, origin=origin,
                               protocol=protocol)
    if base is not None and base.version is not None:
        opened = conflicts.state_at(base.version)
        if opened is None:
            pipeline.release()
            return ChangeResult(errors={"version": (
                f"This form was opened at configuration version {base.version}, which this "
                "console does not have: reload the page.")})
        changes = conflicts.operator_changes(protocol, changes, opened)
        conflict = conflicts.judge(protocol, changes, opened, base.version)
        if conflict is not None and conflict.fields:
            return _conflicted(ChangeResult(conflict=conflict), actor=actor, origin=origin,
                               protocol=protocol)
        merged = conflict.since if conflict is not None else []
        prepared = None         # the operator's changes alone, over what is saved now
    if prepared is not None and prepared.based_on != current().state.as_json():
        prepared = None         # prepared against a configuration replaced since: again, now
    prep = prepared if prepared is not None else prepare_changes(protocol, changes)
    result = ChangeResult(errors=prep.errors, warnings=prep.warnings, settings=prep.settings,
                          merged=merged)
    if prep.errors:
        return _rejected(result, actor=actor, origin=origin, action="update", protocol=protocol)
    candidate = candidate_state(protocol, prep)
    return _commit(candidate, result, actor=actor, origin=origin, action="update",
                   confirm=confirm, protocol=protocol,
                   seed={protocol: (prep.settings, prep.revealed)}, endpoints=endpoints, ask=ask)


def _conflicted(result: ChangeResult, *, actor: str | None, origin: str,
                protocol: str) -> ChangeResult:
    conflict = result.conflict
    assert conflict is not None
    errors = {f.field: f"changed by someone else since you opened it: {f.loaded} → {f.now}"
              for f in conflict.fields} or {"etag": "changed by someone else since it was read"}
    pipeline.record_rejection("update", actor=actor, origin=origin, protocol=protocol,
                              errors=errors)
    result.settings = effective(protocol)
    return result


def upload_file(protocol: str, slot: str, data: bytes, *, filename: str = "",
                password: str | None = None, key_data: bytes | None = None,
                key_password: str | None = None, actor: str | None = None,
                origin: str = "console", confirm: bool = False) -> ChangeResult:
    """Parse and store a truststore (slot tls_ca) or a client certificate with its key (tls_cert)."""
    check_protocol(protocol)
    result = ChangeResult()
    if slot not in FILE_SLOTS:
        result.errors[slot] = f"No file slot '{slot}': use tls_ca or tls_cert."
        return result
    now = effective(protocol)
    if now.fields[slot].source == "env":
        result.errors[slot] = f"Locked: set by the environment variable {now.fields[slot].env_var}."
        return _rejected(result, actor=actor, origin=origin, action="upload", protocol=protocol)
    try:
        if slot == "tls_ca":
            parsed: certs.Truststore | certs.Keystore = certs.parse_truststore(
                data, password or None, filename=filename)
            key_pem = None
        else:
            parsed = keystore = certs.parse_keystore(data, password or None, key_data=key_data,
                                          key_password=key_password or None, filename=filename)
            key_pem = keystore.key_pem
    except certs.CertError as exc:
        result.errors[slot] = str(exc)
        return _rejected(result, actor=actor, origin=origin, action="upload", protocol=protocol)
    pipeline.lock()
    candidate = current().state.copy()
    candidate.files.setdefault(protocol, {})[slot] = {
        "filename": (filename or "upload")[:255], "format": parsed.format,
        "certs_pem": parsed.certs_pem, "key_ciphertext": encrypt(key_pem) if key_pem else None,
        "uploaded_at": utcnow().isoformat(), "uploaded_by": actor}
    _commit(candidate, result, actor=actor, origin=origin, action="upload", confirm=confirm,
            protocol=protocol)
    if result.ok and result.settings is not None:
        result.warnings = findings(result.settings)[1]
    return result


PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def truststore_blocks(certs_pem: str) -> list[tuple[certs.CertInfo, str]]:
    """Each certificate of a stored truststore with its own PEM block."""
    blocks = PEM_CERTIFICATE.findall(certs_pem or "")
    return [(certs.describe_pem(block)[0], block) for block in blocks]


def _truststore_locked(protocol: str, result: ChangeResult) -> bool:
    now = effective(protocol)
    if now.fields["tls_ca"].source == "env":
        result.errors["tls_ca"] = (f"Locked: set by the environment variable "
                                   f"{now.fields['tls_ca'].env_var}.")
    elif now.fields["tls_ca"].reference is not None:
        result.errors["tls_ca"] = (f"The truststore is the file {now.fields['tls_ca'].reference.ref}: "
                                   "change that file instead.")
    return bool(result.errors)


def add_ca(protocol: str, data: bytes, *, filename: str = "", actor: str | None = None,
           origin: str = "console", confirm: bool = False, why: str = "") -> ChangeResult:
    """Add the CA certificate(s) in `data` to the protocol's truststore, keeping the ones it holds
    (a rotation: old and new CA trusted side by side). `why` opens the audit summary."""
    check_protocol(protocol)
    result = ChangeResult()
    if _truststore_locked(protocol, result):
        return _rejected(result, actor=actor, origin=origin, action="upload", protocol=protocol)
    try:
        parsed = certs.parse_truststore(data, filename=filename)
    except certs.CertError as exc:
        result.errors["tls_ca"] = str(exc)
        return _rejected(result, actor=actor, origin=origin, action="upload", protocol=protocol)
    pipeline.lock()
    candidate = current().state.copy()
    slot = candidate.files.setdefault(protocol, {}).get("tls_ca")
    held = truststore_blocks(slot["certs_pem"]) if slot else []
    known = {info.sha256 for info, _ in held}
    added = [(info, block) for info, block in truststore_blocks(parsed.certs_pem)
             if info.sha256 not in known]
    if not added:
        pipeline.release()
        result.warnings.append(("tls_ca", "The truststore holds that certificate already."))
        result.settings = effective(protocol)
        return result
    bundle = "\n".join(block for _, block in held + added) + "\n"
    candidate.files[protocol]["tls_ca"] = {
        "filename": (slot or {}).get("filename") or (filename or "truststore.pem")[:255],
        "format": "PEM", "certs_pem": bundle, "key_ciphertext": None,
        "uploaded_at": utcnow().isoformat(), "uploaded_by": actor}
    text = "; ".join(f"{why}added CA {info.subject} (SHA-256 {info.sha256}) to the "
                     f"{protocol} truststore" for info, _ in added)
    return _commit(candidate, result, actor=actor, origin=origin, action="upload", confirm=confirm,
                   protocol=protocol, summary=text)


def remove_ca(protocol: str, sha256: str, *, actor: str | None = None, origin: str = "console",
              confirm: bool = False) -> ChangeResult:
    """Remove one certificate (by its SHA-256 fingerprint) from the protocol's truststore."""
    check_protocol(protocol)
    result = ChangeResult()
    if _truststore_locked(protocol, result):
        return _rejected(result, actor=actor, origin=origin, action="remove_file", protocol=protocol)
    wanted = sha256.replace(":", "").upper()
    pipeline.lock()
    candidate = current().state.copy()
    slot = candidate.files.get(protocol, {}).get("tls_ca")
    held = truststore_blocks(slot["certs_pem"]) if slot else []
    kept = [(info, block) for info, block in held if info.sha256.replace(":", "") != wanted]
    if len(kept) == len(held):
        pipeline.release()
        result.errors["sha256"] = "The truststore holds no certificate with that SHA-256 fingerprint."
        return result
    gone = next(info for info, _ in held if info.sha256.replace(":", "") == wanted)
    if kept:
        assert slot is not None
        slot["certs_pem"] = "\n".join(block for _, block in kept) + "\n"
    else:
        candidate.files[protocol].pop("tls_ca")
    return _commit(candidate, result, actor=actor, origin=origin, action="remove_file",
                   confirm=confirm, protocol=protocol,
                   summary=f"removed CA {gone.subject} (SHA-256 {gone.sha256}) from the {protocol} "
                           "truststore")


def delete_file(protocol: str, slot: str, actor: str | None = None, *, origin: str = "console",
                confirm: bool = False) -> ChangeResult:
    """Remove a stored truststore or client certificate."""
    check_protocol(protocol)
    result = ChangeResult()
    if slot not in FILE_SLOTS:
        result.errors[slot] = f"No file slot '{slot}': use tls_ca or tls_cert."
        return result
    pipeline.lock()
    candidate = current().state.copy()
    candidate.files.get(protocol, {}).pop(slot, None)
    return _commit(candidate, result, actor=actor, origin=origin, action="remove_file",
                   confirm=confirm, protocol=protocol)


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
    result = ChangeResult()
    error = validate_priorities(order)
    if error:
        result.errors["priorities"] = error
        return _rejected(result, actor=actor, origin=origin, action="priorities", protocol=None)
    pipeline.lock()
    candidate = current().state.copy()
    candidate.priorities = list(order)
    return _commit(candidate, result, actor=actor, origin=origin, action="priorities",
                   confirm=confirm, protocol=None)


def move_priority(protocol: str, direction: str, actor: str | None = None, *,
                  origin: str = "console", confirm: bool = False) -> ChangeResult:
    """Move one protocol up or down in the saved order."""
    check_protocol(protocol)
    pipeline.lock()
    order = priorities()[1]["saved"]
    index = order.index(protocol)
    target = index - 1 if direction == "up" else index + 1
    if 0 <= target < len(order):
        order[index], order[target] = order[target], order[index]
    return set_priorities(order, actor, origin=origin, confirm=confirm)


def schema_fields(protocol: str):
    """The fields of `protocol` in display order."""
    return SCHEMA[check_protocol(protocol)]


def adapter_count() -> int:
    """How many adapters the registry holds: the adapters a change of these settings can touch."""
    return int(db.session.execute(db.select(db.func.count(Adapter.id))).scalar() or 0)
