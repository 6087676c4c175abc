"""Troubleshooting diagnostics: run a step-wise diagnosis (in the background for the page, so steps
appear as they run), store it, render reports without secrets, and keep the certificate inventory."""
from __future__ import annotations

import datetime as dt
from typing import Any

from flask import current_app

from .. import work
from ..audit import audit
from ..brokers import PROTOCOLS
from ..certs import EXPIRY_WARNING_DAYS
from ..checks import broker_config
from ..extensions import db
from ..messaging.effective import unresolved
from ..messaging.identity import addresses
from ..messaging.resolve import ProtocolSettings
from ..messaging.values import format_host_port
from ..models import AuditEntry, DiagnosisRun, utcnow
from ..settings import changes as pipeline
from ..settings import service as settings_service
from .base import Diagnosis
from .lint import lint


def run(protocol: str, timeout: float, on_step=None, settings=None) -> Diagnosis:
    """Diagnose one protocol with its effective settings (secrets revealed only to the clients)."""
    from .engine import diagnose  # loaded when a diagnosis runs: listing commands never load the steps

    settings = settings or settings_service.effective(protocol, reveal=True)
    missing = unresolved(settings)
    if missing:             # named before any broker is contacted
        detail = "; ".join(f"{name}: {why}" for name, why in missing)
        diagnosis = Diagnosis(protocol, ok=False, cause="secret_unavailable",
                              summary=f"A secret reference of these settings does not resolve: "
                                      f"{detail}. No broker was contacted.",
                              fix=("Mount the file or set the variable the reference names (or "
                                   "point the field at another reference, or a value)."))
        for step in diagnosis.steps:
            step.status = "skipped"
        diagnosis.finished_at = dt.datetime.now(dt.UTC)
        return diagnosis
    with broker_config(settings) as config:
        return diagnose(config, timeout, on_step=on_step)


STAGED = "staged_certificate"   # the label of a diagnosis made with a staged client certificate


def _store(row: DiagnosisRun, diagnosis: Diagnosis, done: bool) -> None:
    staged = (row.result or {}).get(STAGED)
    row.result = diagnosis.as_dict() if staged is None else {**diagnosis.as_dict(), STAGED: staged}
    if done:
        row.status = "done"
        row.ok = diagnosis.ok
        row.cause = diagnosis.cause
        row.finished_at = diagnosis.finished_at or utcnow()


def run_and_store(protocol: str, timeout: float, *, actor: str | None, origin: str,
                  pooled: bool = False, settings: ProtocolSettings | None = None,
                  staged: dict[str, Any] | None = None) -> DiagnosisRun:
    """Diagnose now and store the result; this thread waits for it (`pooled`: the diagnosis runs
    on the broker-work pool, work.Busy when no thread of it is free). `settings` and `staged`: a
    diagnosis with a staged client certificate, labelled with it."""
    if pooled:
        work.room()
    row = DiagnosisRun(protocol=protocol, actor=actor, origin=origin, status="running",
                       result={} if staged is None else {STAGED: staged})
    db.session.add(row)
    db.session.commit()
    try:
        diagnosis = (work.call(run, protocol, timeout, None, settings, timeout=timeout) if pooled
                     else run(protocol, timeout, settings=settings))
    except work.Busy:
        db.session.delete(row)
        db.session.commit()
        raise
    except Exception as exc:  # noqa: BLE001 - stored as a failed run, never a 500
        row.status, row.result = "error", {"error": f"{type(exc).__name__}: {exc}"}
        db.session.commit()
        raise
    _store(row, diagnosis, done=True)
    db.session.commit()
    return row


def _work(run_id: int, protocol: str, timeout: float, settings: ProtocolSettings) -> None:
    """A queued diagnosis, on a broker-work thread: its steps are stored as they complete."""
    target = db.session.get(DiagnosisRun, run_id)
    assert target is not None, f"diagnosis run {run_id} was queued but is not stored"

    def progress(diagnosis: Diagnosis) -> None:
        _store(target, diagnosis, done=False)
        db.session.commit()

    try:
        diagnosis = run(protocol, timeout, on_step=progress, settings=settings)
        _store(target, diagnosis, done=True)
    except Exception as exc:  # noqa: BLE001
        target.status = "error"
        target.result = {**(target.result or {}), "error": f"{type(exc).__name__}: {exc}"}
    db.session.commit()


def start(protocol: str, timeout: float, *, actor: str | None, origin: str = "page",
          settings: ProtocolSettings | None = None, staged: dict[str, Any] | None = None) -> int:
    """Queue a diagnosis on the broker-work pool; returns the run id to poll (work.Busy, and
    nothing stored, when the queue is full). `settings` and `staged`: a diagnosis with a staged
    client certificate, labelled with it."""
    work.room(wait=False)
    first = Diagnosis(protocol).as_dict()
    row = DiagnosisRun(protocol=protocol, actor=actor, origin=origin, status="running",
                       result=first if staged is None else {**first, STAGED: staged})
    db.session.add(row)
    db.session.commit()
    run_id = row.id
    settings = settings or settings_service.effective(protocol, reveal=True)
    try:
        work.submit(_work, run_id, protocol, timeout, settings)
    except work.Busy:
        db.session.delete(row)
        db.session.commit()
        raise
    return run_id


def get(run_id: int) -> DiagnosisRun | None:
    return db.session.get(DiagnosisRun, run_id)


def latest_runs() -> dict[str, DiagnosisRun]:
    """The newest finished diagnosis per protocol."""
    out: dict[str, DiagnosisRun] = {}
    for protocol in PROTOCOLS:
        row = db.session.execute(db.select(DiagnosisRun).where(
            DiagnosisRun.protocol == protocol, DiagnosisRun.status == "done")
            .order_by(DiagnosisRun.id.desc()).limit(1)).scalar_one_or_none()
        if row is not None:
            out[protocol] = row
    return out


PRESENTED_LOOKBACK = 200    # diagnoses per protocol searched for the chain each address presented


def inventory() -> list[dict[str, Any]]:
    """Every certificate the console knows: uploaded, from environment files, and the chain each
    configured address presented in its newest diagnosis that reached TLS (an address no longer
    configured is forgotten); soonest expiry first."""
    items: list[dict[str, Any]] = []
    for protocol in PROTOCOLS:
        settings = settings_service.effective(protocol)
        for slot in ("tls_ca", "tls_cert"):
            resolved = settings.fields[slot]
            value = resolved.value if isinstance(resolved.value, dict) else {}
            origin = f"{slot} ({resolved.env_var})" if resolved.source == "env" else slot
            for cert in value.get("certificates", []):
                items.append({**cert, "protocol": protocol, "source": origin, "slot": slot,
                              "where": (value.get("filename") or value.get("path")
                                        or (f"env:{value['env']}" if value.get("env") else None))})
        configured = [format_host_port(h, p) for h, p in addresses(settings)]
        for address, (row, chain) in presented_chains(protocol, configured).items():
            for cert in chain:
                items.append({**cert, "protocol": protocol, "source": "presented", "where": address,
                              "diagnosis_id": row.id,
                              "seen_at": row.finished_at.isoformat() if row.finished_at else None})
    return sorted(items, key=lambda c: c["not_after"])


def presented_chains(protocol: str, configured: list[str]
                     ) -> dict[str, tuple[DiagnosisRun, list[dict[str, Any]]]]:
    """For each of the `configured` addresses, the newest diagnosis in which it presented
    certificates, and that chain."""
    found: dict[str, tuple[DiagnosisRun, list[dict[str, Any]]]] = {}
    rows = db.session.execute(
        db.select(DiagnosisRun).where(DiagnosisRun.protocol == protocol, DiagnosisRun.status == "done")
        .order_by(DiagnosisRun.id.desc()).limit(PRESENTED_LOOKBACK)).scalars()
    for row in rows:
        result = row.result or {}
        chains: dict[str, list[dict[str, Any]]] = {}
        for cert in result.get("certificates", []):
            address = cert.get("presented_by") or result.get("target")
            if address in configured and address not in found:
                chains.setdefault(address, []).append(cert)
        for address, chain in chains.items():
            found[address] = (row, chain)
        if len(found) == len(configured):
            break
    return {address: found[address] for address in configured if address in found}


def refresh_status(cert: dict[str, Any], now: dt.datetime | None = None) -> dict[str, Any]:
    """Recompute status and days left of a stored certificate description for `now`."""
    now = now or utcnow()
    not_after = dt.datetime.fromisoformat(cert["not_after"])
    not_before = dt.datetime.fromisoformat(cert["not_before"])
    left = (not_after - now).days
    if now < not_before:
        status = "not_yet_valid"
    elif now >= not_after:
        status = "expired"
    elif not_after - now <= dt.timedelta(days=EXPIRY_WARNING_DAYS):
        status = "expiring"
    else:
        status = "valid"
    within = None if status == "valid" or status == "not_yet_valid" else (
        0 if status == "expired" else (CRITICAL_DAYS if not_after - now <= dt.timedelta(
            days=CRITICAL_DAYS) else EXPIRY_WARNING_DAYS))
    return {**cert, "status": status, "days_left": left, "within_days": within}


def certificate_warnings() -> list[dict[str, Any]]:
    """Inventory entries that are expired, expiring or not yet valid."""
    out = []
    for cert in inventory():
        current = refresh_status(cert)
        if current["status"] != "valid":
            out.append({k: current[k] for k in ("protocol", "source", "subject", "not_after",
                                                "status", "days_left", "within_days", "sha256")})
    return out


def report(row: DiagnosisRun) -> dict[str, Any]:
    """A downloadable report: the diagnosis, the effective settings (secrets masked) and the lint
    findings of that protocol."""
    settings = settings_service.effective_all()
    return {
        "generated_at": utcnow().isoformat(timespec="seconds"),
        "console_diagnosis_id": row.id,
        "diagnosis": row.result,
        "settings": settings[row.protocol].public(),
        "findings": [f.as_dict() for f in lint(settings) if f.protocol == row.protocol],
    }


def wait_all(timeout: float = 30) -> None:
    """Wait for queued and running diagnoses (tests and shutdown)."""
    work.wait_idle(current_app._get_current_object(), timeout)  # type: ignore[attr-defined]


CRITICAL_DAYS = 7       # the second warning, after EXPIRY_WARNING_DAYS (30)


def audit_expired() -> list[str]:
    """An audit entry for every certificate the console knows that has expired and has none yet
    (one per protocol, source and fingerprint, across workers and replicas: under the
    configuration's write lock). The summaries written."""
    expired = [c for c in (refresh_status(c) for c in inventory()) if c["status"] == "expired"]
    if not expired:
        return []
    pipeline.lock()
    written = []
    for cert in expired:
        text = (f"certificate expired: {cert['subject']} ({cert['protocol']} {cert['source']}, "
                f"SHA-256 {cert['sha256']}, not after {cert['not_after']})")
        known = db.session.execute(db.select(AuditEntry.id).where(
            AuditEntry.action == "certificate_expired", AuditEntry.summary == text).limit(1)).first()
        if known is None and text not in written:
            audit("certificate_expired", "noticed", actor="console", origin="expiry",
                  protocols=[cert["protocol"]], summary=text)
            written.append(text)
    db.session.commit()
    return written


def openssl_line(address: str) -> str:
    """A command that prints, from another machine, the subject and SHA-256 fingerprint of every
    certificate `address` presents — to compare with the page before trusting one."""
    show = "openssl x509 -noout -subject -fingerprint -sha256"
    return (f"openssl s_client -connect {address} -showcerts </dev/null 2>/dev/null | awk "
            f"'/BEGIN CERT/{{c=\"\"}} {{c=c $0 \"\\n\"}} /END CERT/{{printf \"%s\", c | \"{show}\"; "
            f"close(\"{show}\")}}'")


def trust_choices(row: DiagnosisRun) -> list[dict[str, Any]]:
    """The chain a failed diagnosis (`tls_untrusted`) met, each certificate with whether it can be
    trusted: a CA (the root, or an issuing CA), or a leaf only when it is self-signed (then it must
    be chosen explicitly); empty for any other diagnosis."""
    result = row.result or {}
    if row.status != "done" or result.get("cause") != "tls_untrusted":
        return []
    out = []
    for cert in result.get("certificates", []):
        if not cert.get("pem"):
            continue
        kind = "ca" if cert.get("is_ca") else ("self_signed_leaf" if cert.get("self_signed") else "leaf")
        out.append({**{k: v for k, v in cert.items() if k != "pem"}, "trust": kind,
                    "openssl": openssl_line(cert.get("presented_by") or result.get("target", ""))})
    return out


class TrustRefused(ValueError):
    """Why a certificate of a diagnosis cannot be trusted (nothing changed)."""


def trust(row: DiagnosisRun, sha256: str, *, leaf: bool = False, actor: str | None,
          origin: str) -> settings_service.ChangeResult:
    """Add the certificate `sha256` of the chain `row` met to that protocol's truststore, as an
    ordinary change (version, audit with the fingerprint, delivery). Never automatic: the caller
    has the admin's confirmation."""
    wanted = sha256.replace(":", "").upper()
    chain = {c["sha256"].replace(":", ""): c for c in (row.result or {}).get("certificates", [])}
    choices = {c["sha256"].replace(":", ""): c for c in trust_choices(row)}
    if not choices:
        raise TrustRefused("Only a finished diagnosis that ended in tls_untrusted offers a CA to trust.")
    choice = choices.get(wanted)
    if choice is None:
        raise TrustRefused("That certificate is not in the chain this diagnosis met.")
    if choice["trust"] == "leaf":
        raise TrustRefused("A leaf certificate that is not self-signed cannot be trusted: trust the "
                           "CA that issued it (upload it if the broker does not present it).")
    if choice["trust"] == "self_signed_leaf" and not leaf:
        raise TrustRefused("This is a self-signed leaf certificate: trust it only by choosing it "
                           "explicitly (leaf).")
    return settings_service.add_ca(
        row.protocol, chain[wanted]["pem"].encode(), filename="truststore.pem", actor=actor,
        origin=origin, confirm=True, why=f"trusted after diagnosis {row.id}: ")
