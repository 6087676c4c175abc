"""Secret references (console/messaging/references.py, console/settings/references.py): a password
given as `file:/path` or `env:NAME` is stored, exported, audited and shown as the reference, resolved
when used — a real check against the lab's NATS with a user and password, a service's document —
and a changed file becomes a new configuration version without a save; one that does not resolve is
a warning and the cause `secret_unavailable`, named before any broker is contacted."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from flask import Flask

from console import checks, diagnostics
from console.extensions import db
from console.messaging.references import parse_reference
from console.messaging.values import Invalid
from console.models import AuditEntry, ConfigVersion
from console.settings import references as poller
from console.settings import service, transfer
from tests.conftest import make_token

SECRET = "labpass"


def _nats(lab: dict) -> dict:
    n = lab["brokers"]["nats"]
    return {"enabled": True, "host": n["host"], "port": n["plain_auth"], "username": n["username"]}


def _everything(app: Flask, client, admin_token: str) -> str:
    """Every page, API answer, export and audit entry a person could read, in one text."""
    auth = {"Authorization": f"Bearer {admin_token}"}
    parts = [client.get("/api/v1/brokers", headers=auth).get_data(as_text=True),
             client.get("/api/v1/brokers/nats", headers=auth).get_data(as_text=True)]
    with app.app_context():
        parts.append(transfer.export_yaml())
        parts += [json.dumps({"summary": e.summary, "changes": e.changes}, default=str)
                  for e in db.session.execute(db.select(AuditEntry)).scalars()]
        parts += [json.dumps(v.state, default=str)
                  for v in db.session.execute(db.select(ConfigVersion)).scalars()]
    return "\n".join(parts)


@pytest.mark.parametrize("raw, wanted", [
    ("file:/run/secrets/kafka-password", "file:/run/secrets/kafka-password"),
    ("file:/run//secrets/../secrets/x", "file:/run/secrets/x"),
    ("env:KAFKA_PASSWORD", "env:KAFKA_PASSWORD"),
])
def test_references_parse(raw: str, wanted: str) -> None:
    assert parse_reference(raw) == wanted


@pytest.mark.parametrize("raw", ["file:relative/path", "env:", "env:NOT-A-NAME", "file:"])
def test_bad_references_name_the_form(raw: str) -> None:
    with pytest.raises(Invalid, match="file:/absolute/path|env:NAME"):
        parse_reference(raw)


def test_a_bad_reference_is_a_field_error_and_saves_nothing(app: Flask, admin_token: str) -> None:
    client = app.test_client()
    answer = client.patch("/api/v1/brokers/nats", json={"password": "file:relative"},
                          headers={"Authorization": f"Bearer {admin_token}"})
    assert answer.status_code == 422, answer.data
    assert "file:/absolute/path" in answer.get_json()["errors"]["password"]
    with app.app_context():
        assert "nats" not in service.current().state.secrets


def test_a_file_reference_is_used_shown_rotated_and_never_revealed(app: Flask, admin_token: str, lab,
                                                                  tmp_path: Path) -> None:
    secret = tmp_path / "nats-password"
    secret.write_text(SECRET + "\n")                 # a trailing newline, as `echo` writes it
    client = app.test_client()
    auth = {"Authorization": f"Bearer {admin_token}"}
    answer = client.patch("/api/v1/brokers/nats", json={**_nats(lab), "password": f"file:{secret}"},
                          headers=auth)
    assert answer.status_code == 200, answer.data
    shown = client.get("/api/v1/brokers/nats", headers=auth).get_json()
    value = shown["settings"]["password"]["value"]
    assert value["reference"] == f"file:{secret}" and value["resolves"] is True
    assert value["size"] == len(SECRET) + 1 and len(value["fingerprint"]) == 16
    assert value["changed_at"]
    with app.app_context():
        result = checks.check_settings(service.effective("nats", reveal=True), 5)
    assert result.status == "up", result.message

    assert client.post("/api/v1/services", json={"name": "edge", "protocols": ["nats"]},
                       headers=auth).status_code == 201
    own = {"Authorization": f"Bearer {make_token(app, 'edge-token', 'service', 'edge')}"}
    first = client.get("/api/v1/services/edge/config", headers=own)
    assert first.get_json()["brokers"]["nats"]["password"] == SECRET
    with app.app_context():
        assert poller.poll_once() == []                 # nothing changed: no version
        versions = db.session.execute(db.select(db.func.count(ConfigVersion.id))).scalar()

    secret.write_text("rotated-password")             # rotated by someone else; no one saves
    with app.app_context():
        assert poller.poll_once() == [f"file {secret} changed"]
        assert db.session.execute(db.select(db.func.count(ConfigVersion.id))).scalar() == versions + 1
        entry = db.session.execute(db.select(AuditEntry).order_by(AuditEntry.id.desc())).scalars().first()
        assert entry.summary == f"file {secret} changed" and entry.actor == "console"
        result = checks.check_settings(service.effective("nats", reveal=True), 5)
    assert result.status == "down" and result.cause == "auth_failed"      # the broker got the new one
    second = client.get("/api/v1/services/edge/config", headers=own)
    assert second.get_json()["brokers"]["nats"]["password"] == "rotated-password"
    assert second.headers["ETag"] != first.headers["ETag"]
    assert second.get_json()["version"] > first.get_json()["version"]
    assert client.get("/api/v1/services/edge/config",
                      headers={**auth}).get_json()["brokers"]["nats"]["password"] == {"set": True}

    everything = _everything(app, client, admin_token)
    assert f"file:{secret}" in everything
    assert SECRET not in everything and "rotated-password" not in everything

    secret.unlink()                                   # gone: a warning, and no broker contacted
    with app.app_context():
        assert poller.poll_once() == [f"file {secret} no longer resolves"]
        settings = service.effective("nats", reveal=True)
        warnings = [m for _, m in service.findings(settings)[1]]
        assert any(f"file:{secret} does not resolve" in m for m in warnings), warnings
        settings.fields["host"].value = "no-such-host.invalid"   # DNS would fail if it were asked
        result = checks.check_settings(settings, 5)
        assert result.cause == "secret_unavailable" and f"file:{secret}" in result.message
        diagnosis = diagnostics.run("nats", 5, settings=settings)
        assert diagnosis.cause == "secret_unavailable" and f"file:{secret}" in diagnosis.summary
        assert all(step.status == "skipped" for step in diagnosis.steps)
    page = client.get("/api/v1/brokers/nats", headers=auth).get_json()["settings"]["password"]
    assert page["value"]["resolves"] is False


def test_an_env_reference_and_the_page_and_brokers_list(app: Flask, admin_client, lab,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_NATS_PASSWORD", SECRET)
    with app.app_context():
        result = service.apply_changes("nats", {**_nats(lab), "password": "env:LAB_NATS_PASSWORD"},
                                       "t")
        assert result.ok, result.errors
        assert checks.check_settings(service.effective("nats", reveal=True), 5).status == "up"
    page = admin_client.get("/settings/messaging/nats").get_data(as_text=True)
    assert "env:LAB_NATS_PASSWORD" in page and "resolves now" in page and SECRET not in page
    listed = app.test_cli_runner().invoke(args=["brokers", "list"])
    assert "env:LAB_NATS_PASSWORD (resolves)" in listed.output and SECRET not in listed.output
    monkeypatch.delenv("LAB_NATS_PASSWORD")
    listed = app.test_cli_runner().invoke(args=["brokers", "list", "--json"])
    assert "does not resolve" in listed.output and SECRET not in listed.output


def test_import_accepts_a_reference_and_export_gives_it_back(app: Flask, tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("tok")
    document = f"messaging_console: 1\nbrokers:\n  nats:\n    enabled: true\n    token: file:{secret}\n"
    with app.app_context():
        result = transfer.import_yaml(document, actor="t", origin="cli", confirm=True)
        assert result.ok, result.errors
        exported = transfer.export_yaml()
    assert f"token: file:{secret}" in exported and "tok\n" not in exported


def test_a_truststore_given_as_a_file_reference_is_read_when_used_and_rotated(
        app: Flask, admin_token: str, lab, tmp_path: Path) -> None:
    n = lab["brokers"]["nats"]
    ca = tmp_path / "ca.pem"
    ca.write_bytes(Path(lab["certs"]["ca"]).read_bytes())
    client = app.test_client()
    auth = {"Authorization": f"Bearer {admin_token}"}
    answer = client.patch("/api/v1/brokers/nats", headers=auth, json={
        "enabled": True, "host": n["host"], "port": n["tls"], "tls": True, "username": n["username"],
        "password": n["password"], "tls_ca": f"file:{ca}"})
    assert answer.status_code == 200, answer.data
    shown = client.get("/api/v1/brokers/nats", headers=auth).get_json()["settings"]["tls_ca"]["value"]
    assert shown["reference"] == f"file:{ca}" and shown["resolves"] is True
    assert shown["certificates"][0]["subject"]
    with app.app_context():
        assert checks.check_settings(service.effective("nats", reveal=True), 5).status == "up"
    assert client.post("/api/v1/services", json={"name": "edge", "protocols": ["nats"]},
                       headers=auth).status_code == 201
    own = {"Authorization": f"Bearer {make_token(app, 'edge-token', 'service', 'edge')}"}
    first = client.get("/api/v1/services/edge/config", headers=own)
    assert first.get_json()["brokers"]["nats"]["tls_ca"].strip() == ca.read_text().strip()

    ca.write_bytes(Path(lab["certs"]["other_ca"]).read_bytes())     # another CA: nothing trusts it
    with app.app_context():
        assert poller.poll_once() == [f"file {ca} changed"]
        result = checks.check_settings(service.effective("nats", reveal=True), 5)
    assert result.cause == "tls_untrusted", result.message
    second = client.get("/api/v1/services/edge/config", headers=own)
    assert second.headers["ETag"] != first.headers["ETag"]
    assert second.get_json()["brokers"]["nats"]["tls_ca"].strip() == ca.read_text().strip()
    with app.app_context():
        exported = transfer.export_yaml()
        assert f"tls_ca: file:{ca}" in exported
        result = transfer.import_yaml(exported, actor="t", origin="cli", confirm=True)
        assert result.ok, result.errors
    assert client.patch("/api/v1/brokers/nats", headers=auth, json={"tls_ca": None}).status_code == 200
    cleared = client.get("/api/v1/brokers/nats", headers=auth).get_json()["settings"]["tls_ca"]
    assert cleared["value"] == {"set": False}


def _nats_mtls(lab: dict) -> dict:
    n = lab["brokers"]["nats"]
    return {"enabled": True, "host": n["host"], "port": n["tls_client_cert"], "tls": True,
            "tls_ca": "env:LAB_CA_PEM", "tls_cert": "env:LAB_CLIENT_PEM", "tls_key": "env:LAB_KEY_PEM"}


def test_tls_material_given_as_env_references(app: Flask, admin_token: str, admin_client, lab,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The CA, the client certificate and its key in the console's own variables (the PEM text):
    shown as references with their state, used by a real mutual-TLS check, delivered as PEM, a
    changed variable noticed as a new version, a missing one secret_unavailable."""
    certs = {k: Path(v).read_text() for k, v in lab["certs"].items()}
    monkeypatch.setenv("LAB_CA_PEM", certs["ca"])
    monkeypatch.setenv("LAB_CLIENT_PEM", certs["client_crt"])
    monkeypatch.setenv("LAB_KEY_PEM", certs["client_key"])
    client = app.test_client()
    auth = {"Authorization": f"Bearer {admin_token}"}
    answer = client.patch("/api/v1/brokers/nats", headers=auth, json=_nats_mtls(lab))
    assert answer.status_code == 200, answer.data
    shown = client.get("/api/v1/brokers/nats", headers=auth).get_json()["settings"]
    ca, cert, key = (shown[n]["value"] for n in ("tls_ca", "tls_cert", "tls_key"))
    assert ca["reference"] == "env:LAB_CA_PEM" and ca["resolves"] is True
    assert ca["size"] == len(certs["ca"].encode()) and len(ca["fingerprint"]) == 16
    assert ca["certificates"][0]["subject"] == "CN=Messaging Console Test CA"
    assert cert["reference"] == "env:LAB_CLIENT_PEM" and cert["certificates"][0]["subject"] == (
        "CN=console-client")
    assert key["reference"] == "env:LAB_KEY_PEM" and key["resolves"] is True
    with app.app_context():
        result = checks.check_settings(service.effective("nats", reveal=True), 5)
        assert result.status == "up", result.message
        assert service.findings(service.effective("nats"))[0] == {}
    page = admin_client.get("/settings/messaging/nats").get_data(as_text=True)
    assert "env:LAB_CA_PEM" in page and "env:LAB_KEY_PEM" in page and "resolves now" in page
    assert "PRIVATE KEY" not in page

    assert client.post("/api/v1/services", json={"name": "edge", "protocols": ["nats"]},
                       headers=auth).status_code == 201
    own = {"Authorization": f"Bearer {make_token(app, 'edge-token', 'service', 'edge')}"}
    first = client.get("/api/v1/services/edge/config", headers=own)
    doc = first.get_json()["brokers"]["nats"]
    assert doc["tls_cert"].strip() == certs["client_crt"].strip() and "PRIVATE KEY" in doc["tls_key"]
    with app.app_context():
        exported = transfer.export_yaml()
    assert "tls_key: env:LAB_KEY_PEM" in exported and "PRIVATE KEY" not in exported
    with app.app_context():
        assert transfer.import_yaml(exported, actor="t", origin="cli", confirm=True).ok

    # rotated: the variables now hold a certificate of another CA, which the broker refuses
    monkeypatch.setenv("LAB_CLIENT_PEM", certs["other_client_crt"])
    monkeypatch.setenv("LAB_KEY_PEM", certs["other_client_key"])
    with app.app_context():
        noticed = poller.poll_once()
        assert len(noticed) == 1 and set(noticed[0].split("; ")) == {
            "environment variable LAB_CLIENT_PEM changed", "environment variable LAB_KEY_PEM changed"}
        result = checks.check_settings(service.effective("nats", reveal=True), 5)
    assert result.cause == "tls_client_cert_rejected", result.message
    second = client.get("/api/v1/services/edge/config", headers=own)
    assert second.headers["ETag"] != first.headers["ETag"]
    assert second.get_json()["brokers"]["nats"]["tls_cert"].strip() == certs["other_client_crt"].strip()
    everything = _everything(app, client, admin_token)
    assert "env:LAB_KEY_PEM" in everything and "PRIVATE KEY" not in everything

    monkeypatch.setenv("LAB_CA_PEM", "not a certificate")       # resolves, but holds no PEM
    with app.app_context():
        errors, _ = service.findings(service.effective("nats"))
        assert "LAB_CA_PEM" in errors["tls_ca"], errors
    monkeypatch.delenv("LAB_KEY_PEM")                            # gone: no broker contacted
    with app.app_context():
        settings = service.effective("nats", reveal=True)
        warnings = [m for _, m in service.findings(settings)[1]]
        assert any("env:LAB_KEY_PEM does not resolve" in m for m in warnings), warnings
        settings.fields["host"].value = "no-such-host.invalid"
        result = checks.check_settings(settings, 5)
        assert result.cause == "secret_unavailable" and "env:LAB_KEY_PEM" in result.message
        diagnosis = diagnostics.run("nats", 5, settings=settings)
        assert diagnosis.cause == "secret_unavailable" and "env:LAB_KEY_PEM" in diagnosis.summary
    page = admin_client.get("/settings/messaging/nats").get_data(as_text=True)
    assert "env:LAB_KEY_PEM does not resolve" in page


def test_an_env_reference_to_no_pem_is_refused_at_save(app: Flask, admin_token: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOT_A_PEM", "hello")
    client = app.test_client()
    answer = client.patch("/api/v1/brokers/nats", json={"tls_ca": "env:NOT_A_PEM"},
                          headers={"Authorization": f"Bearer {admin_token}"})
    assert answer.status_code == 422, answer.data
    assert "NOT_A_PEM" in answer.get_json()["errors"]["tls_ca"]
    with app.app_context():
        assert "nats" not in service.current().state.values
