"""A client certificate staged next to the current one (console/settings/staging.py, the API's
/brokers/<protocol>/staged-certificate routes, the page's staging form), against the lab's NATS
mutual-TLS listener (it accepts client certificates signed by the lab's CA only): the current pair
works; a new pair, issued here by the lab's CA, is staged and tried (check and diagnosis up, labelled
as staged) while services keep getting the current pair; promoted, it is what services get, in one
audited version. A pair from another CA, staged, fails its check while the current one stays up.
Viewers can look but not stage, try, promote or discard."""
from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from flask import Flask

from console import checks, diagnostics
from console.extensions import db
from console.models import AuditEntry, ConfigVersion, DiagnosisRun
from console.settings import service, staging
from tests.conftest import make_token


def _issue_client(lab: dict, name: str) -> tuple[bytes, bytes]:
    """A new client certificate signed by the lab's CA, and its key (PEM)."""
    ca = x509.load_pem_x509_certificate(Path(lab["certs"]["ca"]).read_bytes())
    ca_key = serialization.load_pem_private_key(Path(lab["certs"]["ca_key"]).read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=60))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))       # type: ignore[arg-type]
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def _mtls(app: Flask, lab: dict) -> None:
    n = lab["brokers"]["nats"]
    with app.app_context():
        assert service.apply_changes("nats", {"enabled": True, "host": n["host"],
                                              "port": n["tls_client_cert"], "tls": True}, "t").ok
        assert service.upload_file("nats", "tls_ca", Path(lab["certs"]["ca"]).read_bytes(),
                                   filename="ca.pem", actor="t").ok
        assert service.upload_file("nats", "tls_cert", Path(lab["certs"]["client_crt"]).read_bytes(),
                                   key_data=Path(lab["certs"]["client_key"]).read_bytes(),
                                   filename="client.pem", actor="t").ok


def _current_check(app: Flask) -> checks.CheckResult:
    with app.app_context():
        return checks.check_settings(service.effective("nats", reveal=True), 5)


def test_stage_try_and_promote_a_client_certificate(app: Flask, lab, admin_token: str,
                                                    viewer_token: str) -> None:
    _mtls(app, lab)
    client = app.test_client()
    admin = {"Authorization": f"Bearer {admin_token}"}
    viewer = {"Authorization": f"Bearer {viewer_token}"}
    base = "/api/v1/brokers/nats/staged-certificate"
    assert client.post("/api/v1/services", json={"name": "edge", "protocols": ["nats"]},
                       headers=admin).status_code == 201
    own = {"Authorization": f"Bearer {make_token(app, 'edge-token', 'service', 'edge')}"}
    old_pem = Path(lab["certs"]["client_crt"]).read_text()
    first = client.get("/api/v1/services/edge/config", headers=own)
    assert first.get_json()["brokers"]["nats"]["tls_cert"].strip() == old_pem.strip()
    assert _current_check(app).status == "up"
    assert client.get(base, headers=admin).status_code == 404          # nothing staged
    assert client.post(f"{base}/check", headers=admin).status_code == 404

    new_pem, new_key = _issue_client(lab, "console-client-2027")
    assert client.post(base, json={"pem": new_pem.decode(), "key_pem": new_key.decode()},
                       headers=viewer).status_code == 403
    staged = client.post(base, json={"pem": new_pem.decode(), "key_pem": new_key.decode()},
                         headers=admin)
    assert staged.status_code == 201, staged.data
    assert staged.get_json()["staged"]["certificates"][0]["subject"] == "CN=console-client-2027"
    assert "PRIVATE KEY" not in staged.get_data(as_text=True)
    shown = client.get(base, headers=viewer)                            # a viewer may look
    assert shown.status_code == 200 and "PRIVATE KEY" not in shown.get_data(as_text=True)
    with app.app_context():
        versions = db.session.execute(db.select(db.func.count(ConfigVersion.id))).scalar()

    # tried: a real check and a diagnosis with the staged pair, labelled as such
    assert client.post(f"{base}/check", headers=viewer).status_code == 403
    tried = client.post(f"{base}/check", headers=admin)
    assert tried.status_code == 200, tried.data
    body = tried.get_json()
    assert body["status"] == "up", body
    assert body["staged_certificate"]["subject"] == "CN=console-client-2027"
    diagnosed = client.post(f"{base}/diagnose?timeout=5", headers=admin).get_json()
    assert diagnosed["ok"] is True and diagnosed["cause"] == "ok", diagnosed
    assert diagnosed["staged_certificate"]["subject"] == "CN=console-client-2027"
    assert client.post(f"{base}/diagnose", headers=viewer).status_code == 403

    # ... while services still get the current pair, in the same version
    still = client.get("/api/v1/services/edge/config", headers=own)
    assert still.headers["ETag"] == first.headers["ETag"]
    assert still.get_json()["brokers"]["nats"]["tls_cert"].strip() == old_pem.strip()
    with app.app_context():
        assert db.session.execute(db.select(db.func.count(ConfigVersion.id))).scalar() == versions
        assert service.current().state.files["nats"]["tls_cert"]["certs_pem"].strip() == (
            old_pem.strip())

    # promoted: one version, audited, and services get the new pair
    preview = client.post(f"{base}/promote", json={"dry_run": True}, headers=admin)
    assert preview.status_code == 200 and preview.get_json()["status"] == "preview"
    assert client.post(f"{base}/promote", headers=viewer).status_code == 403
    promoted = client.post(f"{base}/promote", headers=admin)
    assert promoted.status_code == 200, promoted.data
    assert "tls_cert" in promoted.get_json()["changed"]
    with app.app_context():
        assert db.session.execute(db.select(db.func.count(ConfigVersion.id))).scalar() == versions + 1
        entry = db.session.execute(db.select(AuditEntry).where(AuditEntry.action == "upload")
                                   .order_by(AuditEntry.id.desc())).scalars().first()
        assert "promoted the staged client certificate CN=console-client-2027" in entry.summary
        assert entry.version_id is not None
        assert staging.get("nats") is None
    after = client.get("/api/v1/services/edge/config", headers=own)
    assert after.headers["ETag"] != first.headers["ETag"]
    doc = after.get_json()["brokers"]["nats"]
    assert doc["tls_cert"].strip() == new_pem.decode().strip()
    assert doc["tls_key"].strip() == new_key.decode().strip()
    assert _current_check(app).status == "up"
    assert client.get(base, headers=admin).status_code == 404
    assert client.post(f"{base}/promote", headers=admin).status_code == 404


def test_a_refused_staged_pair_leaves_the_current_one_up_and_can_be_discarded(
        app: Flask, lab, admin_token: str, viewer_token: str) -> None:
    _mtls(app, lab)
    client = app.test_client()
    admin = {"Authorization": f"Bearer {admin_token}"}
    base = "/api/v1/brokers/nats/staged-certificate"
    other = Path(lab["certs"]["other_client_crt"]), Path(lab["certs"]["other_client_key"])
    staged = client.post(base, headers=admin, data={
        "file": (other[0].open("rb"), "other-client.crt"),
        "key_file": (other[1].open("rb"), "other-client.key")})
    assert staged.status_code == 201, staged.data
    tried = client.post(f"{base}/check", headers=admin).get_json()
    assert tried["status"] == "down" and tried["cause"] == "tls_client_cert_rejected", tried
    assert _current_check(app).status == "up"                   # the current pair is untouched
    assert client.delete(base, headers={"Authorization": f"Bearer {viewer_token}"}).status_code == 403
    gone = client.delete(base, headers=admin)
    assert gone.status_code == 200
    assert client.delete(base, headers=admin).status_code == 404
    with app.app_context():
        actions = [e.action for e in db.session.execute(db.select(AuditEntry)).scalars()]
        assert "stage_certificate" in actions and "discard_certificate" in actions
        assert staging.get("nats") is None
    assert _current_check(app).status == "up"


@pytest.mark.parametrize("body, field", [
    ({"pem": "not a certificate"}, "tls_cert"),
    ({"pem": "x", "key_pem": 3}, "key_pem"),
])
def test_a_bad_staged_pair_is_a_field_error_and_stages_nothing(app: Flask, admin_token: str,
                                                              body: dict, field: str) -> None:
    client = app.test_client()
    answer = client.post("/api/v1/brokers/nats/staged-certificate", json=body,
                         headers={"Authorization": f"Bearer {admin_token}"})
    assert answer.status_code == 422, answer.data
    assert field in answer.get_json()["errors"]
    with app.app_context():
        assert staging.get("nats") is None


def test_a_certificate_without_its_key_is_refused(app: Flask, lab, admin_token: str) -> None:
    client = app.test_client()
    answer = client.post("/api/v1/brokers/nats/staged-certificate",
                         json={"pem": Path(lab["certs"]["client_crt"]).read_text()},
                         headers={"Authorization": f"Bearer {admin_token}"})
    assert answer.status_code == 422 and "key" in answer.get_json()["errors"]["tls_cert"]


def test_the_page_stages_tries_and_promotes_for_admins_only(app: Flask, lab, admin_client,
                                                            viewer_client) -> None:
    _mtls(app, lab)
    new_pem, new_key = _issue_client(lab, "console-client-page")
    base = "/settings/messaging/nats/staged-certificate"
    page = admin_client.get("/settings/messaging/nats").get_data(as_text=True)
    assert "Stage the new one here" in page
    assert "Stage the new one here" not in viewer_client.get("/settings/messaging/nats").get_data(
        as_text=True)
    files = {"file": (io.BytesIO(new_pem), "new.crt"), "key_file": (io.BytesIO(new_key), "new.key")}
    assert viewer_client.post(base, data=files).status_code == 403
    files = {"file": (io.BytesIO(new_pem), "new.crt"), "key_file": (io.BytesIO(new_key), "new.key")}
    staged = admin_client.post(base, data=files, headers={"HX-Request": "true"})
    assert staged.status_code == 200, staged.data[:500]
    shown = staged.get_data(as_text=True)
    assert "CN=console-client-page" in shown and "Promote" in shown and "PRIVATE KEY" not in shown
    seen = viewer_client.get("/settings/messaging/nats").get_data(as_text=True)
    assert "CN=console-client-page" in seen and "Promote" not in seen     # a viewer may look

    assert viewer_client.post(f"{base}/test", headers={"HX-Request": "true"}).status_code == 403
    tried = admin_client.post(f"{base}/test", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "With the staged client certificate" in tried and "Connected" in tried, tried
    plain = admin_client.post(f"{base}/test").get_data(as_text=True)          # without JavaScript
    assert "With the staged client certificate" in plain and "Connected" in plain
    assert viewer_client.post(f"{base}/diagnose").status_code == 403
    started = admin_client.post(f"{base}/diagnose", headers={"HX-Request": "true"})
    assert started.status_code == 202 and "With the staged client certificate" in started.get_data(
        as_text=True)
    with app.app_context():
        diagnostics.wait_all()
        run = db.session.execute(db.select(DiagnosisRun).order_by(
            DiagnosisRun.id.desc())).scalars().first()
        assert run.ok and run.result["staged_certificate"]["subject"] == "CN=console-client-page"
    report = admin_client.get(f"/settings/messaging/diagnoses/{run.id}/report").get_data(as_text=True)
    assert "Made with the staged client certificate" in report

    assert viewer_client.post(f"{base}/promote").status_code == 403
    done = admin_client.post(f"{base}/promote", headers={"HX-Request": "true"})
    assert done.status_code == 200 and "Promoted" in done.get_data(as_text=True)
    with app.app_context():
        held = service.current().state.files["nats"]["tls_cert"]["certs_pem"]
        assert held.strip() == new_pem.decode().strip() and staging.get("nats") is None
    assert _current_check(app).status == "up"


def test_promotion_replaces_references_and_an_environment_lock_refuses_staging(
        app: Flask, lab, admin_token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    client = app.test_client()
    admin = {"Authorization": f"Bearer {admin_token}"}
    base = "/api/v1/brokers/nats/staged-certificate"
    monkeypatch.setenv("OLD_CERT_PEM", Path(lab["certs"]["client_crt"]).read_text())
    assert client.patch("/api/v1/brokers/nats", headers=admin, json={
        "tls_cert": "env:OLD_CERT_PEM", "tls_key": f"file:{lab['certs']['client_key']}"}
    ).status_code == 200
    new_pem, new_key = _issue_client(lab, "console-client-next")
    assert client.post(base, json={"pem": new_pem.decode(), "key_pem": new_key.decode()},
                       headers=admin).status_code == 201
    shown = client.get("/api/v1/brokers/nats", headers=admin).get_json()["settings"]
    assert shown["tls_cert"]["value"]["reference"] == "env:OLD_CERT_PEM"     # still in use
    assert client.post(f"{base}/promote", headers=admin).status_code == 200
    with app.app_context():
        state = service.current().state
        assert "tls_cert" not in state.values.get("nats", {})
        assert "tls_key" not in state.secrets.get("nats", {})
        assert state.files["nats"]["tls_cert"]["certs_pem"].strip() == new_pem.decode().strip()

    monkeypatch.setenv("SP_NATS_TLS_CERT_FILE", lab["certs"]["client_crt"])
    refused = client.post(base, json={"pem": new_pem.decode(), "key_pem": new_key.decode()},
                          headers=admin)
    assert refused.status_code == 422
    assert "SP_NATS_TLS_CERT_FILE" in refused.get_json()["errors"]["tls_cert"]
    with app.app_context():
        assert staging.get("nats") is None
