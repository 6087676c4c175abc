"""A client certificate staged next to the current one (rotation without a gap): an admin stages a new
certificate and key for a protocol, tries them with Test connection and Diagnose (the check runs with
the staged pair; services keep getting the current one), then promotes them in one ordinary change
(impact preview, version, audit, delivery) or discards them. The staged pair lives in its own table,
outside the versioned configuration, so staging and discarding never change what services get; its
key is encrypted at rest like an uploaded one. Staging and discarding are audited."""
from __future__ import annotations

from typing import Any

from .. import certs
from ..audit import audit
from ..crypto import decrypt, encrypt
from ..extensions import db
from ..messaging.effective import check_protocol, current, effective, saved_layer
from ..messaging.resolve import ProtocolSettings, StoredFile
from ..messaging.state import State
from ..models import StagedCertificate, utcnow
from . import changes as pipeline
from .service import ChangeResult, _commit, _rejected

SLOT = "tls_cert"


def get(protocol: str) -> StagedCertificate | None:
    """The pair staged for `protocol`, if any."""
    return db.session.get(StagedCertificate, check_protocol(protocol))


def _leaf(row: StagedCertificate) -> certs.CertInfo:
    return certs.describe_pem(row.certs_pem)[0]


def _name(row: StagedCertificate) -> str:
    leaf = _leaf(row)
    return f"{leaf.subject} (SHA-256 {leaf.sha256})"


def describe(protocol: str) -> dict[str, Any] | None:
    """What the page and API show of the staged pair (never the key)."""
    row = get(protocol)
    if row is None:
        return None
    return {"filename": row.filename, "format": row.format,
            "certificates": [c.as_dict() for c in certs.describe_pem(row.certs_pem)],
            "staged_at": row.staged_at.isoformat() if row.staged_at else None,
            "staged_by": row.staged_by}


def label(protocol: str) -> dict[str, Any] | None:
    """How a check or diagnosis made with the staged pair is labelled."""
    row = get(protocol)
    if row is None:
        return None
    leaf = _leaf(row)
    return {"subject": leaf.subject, "sha256": leaf.sha256, "not_after": leaf.as_dict()["not_after"],
            "staged_at": row.staged_at.isoformat() if row.staged_at else None}


def settings(protocol: str, reveal: bool = True) -> ProtocolSettings | None:
    """The protocol's effective settings with the staged certificate and key in place of the
    current ones (None when nothing is staged); what a staged check or diagnosis uses."""
    row = get(protocol)
    if row is None:
        return None
    saved = saved_layer(protocol, reveal)
    saved.values.pop("tls_cert", None)          # a reference would win over the staged file
    saved.secrets.pop("tls_key", None)
    saved.files[SLOT] = StoredFile(
        filename=row.filename, format=row.format, certs_pem=row.certs_pem, has_key=True,
        key_pem=decrypt(row.key_ciphertext) if reveal else None,
        uploaded_at=row.staged_at.isoformat() if row.staged_at else None, uploaded_by=row.staged_by)
    return effective(protocol, reveal=reveal, saved=saved)


def _locked(protocol: str, result: ChangeResult) -> bool:
    now = effective(protocol)
    for name in ("tls_cert", "tls_key"):
        if now.fields[name].source == "env":
            result.errors[SLOT] = (f"Locked: the client {'certificate' if name == 'tls_cert' else 'key'}"
                                   f" is set by the environment variable {now.fields[name].env_var}; "
                                   "change it there.")
            return True
    return False


def stage(protocol: str, data: bytes, *, filename: str = "", password: str | None = None,
          key_data: bytes | None = None, key_password: str | None = None,
          actor: str | None = None, origin: str = "console") -> ChangeResult:
    """Parse a client certificate with its key (as an upload of tls_cert) and keep it staged,
    replacing a pair staged before; the current pair stays in use."""
    check_protocol(protocol)
    result = ChangeResult()
    if _locked(protocol, result):
        return _rejected(result, actor=actor, origin=origin, action="stage_certificate",
                         protocol=protocol)
    try:
        parsed = certs.parse_keystore(data, password or None, key_data=key_data,
                                      key_password=key_password or None, filename=filename)
    except certs.CertError as exc:
        result.errors[SLOT] = str(exc)
        return _rejected(result, actor=actor, origin=origin, action="stage_certificate",
                         protocol=protocol)
    row = get(protocol) or StagedCertificate(protocol=protocol)
    row.filename = (filename or "upload")[:255]
    row.format = parsed.format
    row.certs_pem = parsed.certs_pem
    row.key_ciphertext = encrypt(parsed.key_pem)
    row.staged_at = utcnow()
    row.staged_by = actor
    db.session.add(row)
    audit("stage_certificate", "applied", actor=actor, origin=origin, protocols=[protocol],
          summary=f"staged client certificate {_name(row)} for {protocol}; the current one stays "
                  "in use until it is promoted")
    db.session.commit()
    result.warnings = [(SLOT, note) for note in parsed.notes]
    result.settings = effective(protocol)
    return result


def discard(protocol: str, *, actor: str | None = None, origin: str = "console") -> bool:
    """Forget the staged pair; False when nothing was staged."""
    row = get(protocol)
    if row is None:
        return False
    text = f"discarded the staged client certificate {_name(row)} for {protocol}"
    db.session.delete(row)
    audit("discard_certificate", "applied", actor=actor, origin=origin, protocols=[protocol],
          summary=text)
    db.session.commit()
    return True


def _promoted(protocol: str, row: StagedCertificate) -> str:
    return f"promoted the staged client certificate {_name(row)} for {protocol}"


def _candidate(protocol: str, row: StagedCertificate, actor: str | None) -> State:
    """The saved configuration with the staged pair as the protocol's client certificate (a
    certificate or key given as a reference gives way to it)."""
    candidate = current().state.copy()
    candidate.files.setdefault(protocol, {})[SLOT] = {
        "filename": row.filename, "format": row.format, "certs_pem": row.certs_pem,
        "key_ciphertext": row.key_ciphertext, "uploaded_at": utcnow().isoformat(),
        "uploaded_by": actor}
    for part, name in (("values", "tls_cert"), ("secrets", "tls_key")):
        held = getattr(candidate, part).get(protocol)
        if held is not None:
            held.pop(name, None)
            if not held:
                getattr(candidate, part).pop(protocol)
    return candidate


def preview(protocol: str, *, actor: str | None = None) -> pipeline.Outcome | None:
    """What promoting the staged pair would change and whom it affects, saving nothing (None when
    nothing is staged)."""
    row = get(protocol)
    if row is None:
        return None
    return pipeline.commit(_candidate(protocol, row, actor), actor=actor, origin="console",
                           action="upload", dry_run=True, summary=_promoted(protocol, row))


def promote(protocol: str, *, actor: str | None = None, origin: str = "console",
            confirm: bool = False) -> ChangeResult:
    """Make the staged pair the protocol's client certificate and key in one ordinary change
    (impact check: adapters affected need `confirm`; version, audit, delivery). A certificate or
    key given as a reference is replaced by the promoted pair. The staged pair is gone after."""
    check_protocol(protocol)
    result = ChangeResult()
    row = get(protocol)
    if row is None:
        result.errors[SLOT] = "No client certificate is staged for this protocol: stage one first."
        return result
    if _locked(protocol, result):
        return _rejected(result, actor=actor, origin=origin, action="upload", protocol=protocol)
    pipeline.lock()
    _commit(_candidate(protocol, row, actor), result, actor=actor, origin=origin, action="upload",
            confirm=confirm, protocol=protocol, summary=_promoted(protocol, row))
    if result.outcome is not None and result.outcome.status in ("applied", "unchanged"):
        gone = get(protocol)
        if gone is not None:
            db.session.delete(gone)
            db.session.commit()
    return result
