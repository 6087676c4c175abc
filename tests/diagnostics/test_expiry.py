"""Certificate expiry (console/diagnostics refresh_status, certificate_warnings, audit_expired): a
certificate within 30 days and within 7 days of its end warns on /readyz and the Certificates page
with how near it is; an expired one is an audit entry — once, however often it is looked at."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask

from console import diagnostics
from console.extensions import db
from console.models import AuditEntry
from console.settings import service


def _ca(days: int) -> bytes:
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"CA ending in {days} days")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def test_thirty_and_seven_days_and_an_expired_certificate(app: Flask, client, admin_client,
                                                         pki: dict[str, Path]) -> None:
    with app.app_context():
        assert service.add_ca("mqtt", _ca(20), actor="t").ok
        assert service.add_ca("mqtt", _ca(3), actor="t").ok
        assert service.add_ca("mqtt", pki["expired.crt"].read_bytes(), actor="t").ok
    found = {c["subject"]: c for c in client.get("/readyz").get_json()["certificates"]}
    assert found["CN=CA ending in 20 days"]["within_days"] == 30
    assert found["CN=CA ending in 3 days"]["within_days"] == 7
    expired = next(c for c in found.values() if c["status"] == "expired")
    assert expired["within_days"] == 0
    page = admin_client.get("/certificates").get_data(as_text=True)
    assert "CA ending in 3 days" in page and "(within 7)" in page
    metrics = client.get("/metrics").get_data(as_text=True)
    left = {line.split('subject="', 1)[1].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines() if line.startswith("messaging_certificate_days_left{")}
    assert left["CN=CA ending in 20 days"] == 19 and left["CN=CA ending in 3 days"] == 2
    assert left[expired["subject"]] < 0
    with app.app_context():
        written = diagnostics.audit_expired()
        assert len(written) == 1 and expired["sha256"] in written[0]
        assert diagnostics.audit_expired() == []            # once
        entries = db.session.execute(db.select(AuditEntry).where(
            AuditEntry.action == "certificate_expired")).scalars().all()
        assert len(entries) == 1 and entries[0].actor == "console"
