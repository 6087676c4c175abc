"""Configuration delivery API: service tokens and their scope, the service's document (secrets and
PEM material only to its own token, audited; masked for admins and viewers), ETag and 304, acks,
roll-out state, adapters' configuration, migrate and delete, and tokens from the API and the page."""
from __future__ import annotations

import re

import pki
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from flask import Flask

from console.extensions import db
from console.models import AuditEntry
from tests import test_certs as certs_helpers
from tests.conftest import make_token
from tests.test_security import concrete_routes

SECRET = "mqtt-Pass-Secret-77"
RABBIT_SECRET = "rabbit-Pass-Secret-78"
KEY_PASSWORD = certs_helpers.SECRET


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def tls():
    ca = pki.make_ca()
    return {"ca": ca, "client": pki.issue(ca, "edge-client", client=True)}


@pytest.fixture
def edge(app: Flask, client, admin_token, tls):
    """Service edge (mqtt, rabbitmq) with MQTT enabled, a password, a PKCS#12 truststore and a JKS
    client keystore; RabbitMQ enabled with its password. Its own service token."""
    h = bearer(admin_token)
    assert client.post("/api/v1/services", headers=h,
                       json={"name": "edge", "protocols": ["mqtt", "rabbitmq"]}).status_code == 201
    assert client.post("/api/v1/services", headers=h,
                       json={"name": "lake", "protocols": ["kafka"]}).status_code == 201
    assert client.patch("/api/v1/brokers/mqtt", headers=h, json={
        "enabled": True, "host": "127.0.0.1", "username": "edge", "password": SECRET,
        "tls": True}).status_code == 200
    assert client.patch("/api/v1/brokers/rabbitmq", headers=h, json={
        "enabled": True, "password": RABBIT_SECRET}).status_code == 200
    p12 = certs_helpers.make_p12(None, [tls["ca"]], KEY_PASSWORD)
    response = client.post("/api/v1/brokers/mqtt/files/tls_ca", headers=h, data={
        "file": (__import__("io").BytesIO(p12), "trust.p12"), "password": KEY_PASSWORD})
    assert response.status_code == 201, response.get_json()
    store = certs_helpers.make_jks([certs_helpers.key_entry("edge", tls["client"], [tls["ca"]])])
    response = client.post("/api/v1/brokers/mqtt/files/tls_cert", headers=h, data={
        "file": (__import__("io").BytesIO(store), "client.jks"), "password": KEY_PASSWORD})
    assert response.status_code == 201, response.get_json()
    return {"token": make_token(app, "edge-token", "service", "edge"),
            "lake": make_token(app, "lake-token", "service", "lake")}


def test_service_token_gets_every_value_and_pem_material(client, edge, tls) -> None:
    response = client.get("/api/v1/services/edge/config", headers=bearer(edge["token"]))
    assert response.status_code == 200
    doc = response.get_json()
    assert doc["service"] == "edge" and doc["protocol"] == "mqtt"
    assert set(doc["brokers"]) == {"mqtt", "rabbitmq"}      # enabled and supported only
    mqtt = doc["brokers"]["mqtt"]
    assert mqtt["password"] == SECRET and mqtt["username"] == "edge" and mqtt["tls"] is True
    assert doc["brokers"]["rabbitmq"]["password"] == RABBIT_SECRET
    # the PKCS#12 truststore and the JKS keystore arrive as PEM any client library can use
    ca = x509.load_pem_x509_certificates(mqtt["tls_ca"].encode())
    assert [c.subject for c in ca] == [tls["ca"].cert.subject]
    cert = x509.load_pem_x509_certificates(mqtt["tls_cert"].encode())[0]
    assert cert.subject == tls["client"].cert.subject
    key = serialization.load_pem_private_key(mqtt["tls_key"].encode(), password=None)
    assert key.public_key().public_numbers() == tls["client"].key.public_key().public_numbers()
    assert response.headers["ETag"] == f'"{doc["etag"]}"'
    assert response.headers["Cache-Control"] == "no-store"
    assert mqtt["nodes"] == ["127.0.0.1:1883"] and mqtt["tls_active"] is True


def test_admins_and_viewers_get_the_document_masked(client, edge, admin_token, viewer_token) -> None:
    for token in (admin_token, viewer_token):
        response = client.get("/api/v1/services/edge/config", headers=bearer(token))
        assert response.status_code == 200
        text = response.get_data(as_text=True)
        assert SECRET not in text and RABBIT_SECRET not in text and "PRIVATE KEY" not in text
        mqtt = response.get_json()["brokers"]["mqtt"]
        assert mqtt["password"] == {"set": True} and mqtt["tls_key"] == {"set": True}
        assert response.headers["ETag"].endswith('-masked"')


def test_secret_reads_are_audited_with_version_and_address(app, client, edge) -> None:
    client.get("/api/v1/services/edge/config", headers=bearer(edge["token"]),
               environ_base={"REMOTE_ADDR": "127.0.0.9"})
    with app.app_context():
        entry = db.session.execute(db.select(AuditEntry).where(
            AuditEntry.action == "read_config")).scalar_one()
        assert entry.actor == "token:edge-token" and entry.remote == "127.0.0.9"
        assert re.search(r"edge read its configuration v\d+ \(secrets included\) from 127\.0\.0\.9",
                         entry.summary)
        assert SECRET not in entry.summary and SECRET not in str(entry.changes)


def test_etag_and_304_without_decrypting(app, client, edge, monkeypatch) -> None:
    h = bearer(edge["token"])
    first = client.get("/api/v1/services/edge/config", headers=h)
    tag = first.headers["ETag"]
    import console.crypto
    import console.messaging.state

    def refuse(*_):
        raise AssertionError("decrypted for a 304")
    monkeypatch.setattr(console.crypto, "decrypt", refuse)
    monkeypatch.setattr(console.messaging.state, "decrypt", refuse)
    again = client.get("/api/v1/services/edge/config", headers={**h, "If-None-Match": tag})
    assert again.status_code == 304 and again.data == b"" and again.headers["ETag"] == tag
    monkeypatch.undo()
    # a change makes the tag stale: a full answer with a new tag
    client.patch("/api/v1/brokers/mqtt", headers=bearer(make_token(app, "adm2", "admin")),
                 json={"port": 8883})
    changed = client.get("/api/v1/services/edge/config", headers={**h, "If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["ETag"] != tag
    assert changed.get_json()["brokers"]["mqtt"]["port"] == 8883
    assert changed.get_json()["version"] > first.get_json()["version"]


def test_service_token_scope_on_every_route(app, client, edge) -> None:
    allowed = {("api.service_config", "GET"), ("api.service_ack", "POST"),
               ("api.register_service", "POST"), ("api.adapter_config", "GET")}
    checked = 0
    for endpoint, method, url in concrete_routes(app):
        if not url.startswith("/api/v1/") or endpoint == "api.openapi":
            continue
        response = client.open(url, method=method, headers=bearer(edge["lake"]), json={})
        if (endpoint, method) in allowed:
            # with another service's name (edge) the lake token is refused too
            assert response.status_code in (403, 404, 400), (endpoint, response.status_code)
        else:
            assert response.status_code == 403, (endpoint, method, response.status_code)
        checked += 1
    assert checked > 30
    # pages need a session: a bearer token does not log anyone in
    assert client.get("/settings/messaging", headers=bearer(edge["token"])).status_code == 302


def test_service_token_of_a_cannot_read_or_ack_for_b(client, edge) -> None:
    h = bearer(edge["lake"])
    assert client.get("/api/v1/services/edge/config", headers=h).status_code == 403
    assert client.post("/api/v1/services/edge/ack", headers=h,
                       json={"version": 1, "status": "applied"}).status_code == 403
    assert client.post("/api/v1/services", headers=h,
                       json={"name": "edge", "protocols": ["kafka"]}).status_code == 403
    assert client.get("/api/v1/services/lake/config", headers=h).status_code == 200
    # its own registration, callbacks included
    response = client.post("/api/v1/services", headers=h, json={
        "name": "lake", "protocols": ["kafka", "mqtt"], "callback_url": "http://127.0.0.1:9/hook"})
    assert response.status_code == 200 and len(response.get_json()["signing_secret"]) == 64


def test_ack_is_recorded_and_shown(client, edge, admin_token, admin_client) -> None:
    h = bearer(edge["token"])
    doc = client.get("/api/v1/services/edge/config", headers=h).get_json()
    response = client.post("/api/v1/services/edge/ack", headers=h,
                           json={"version": doc["version"], "status": "applied"})
    assert response.status_code == 200 and response.get_json()["state"] == "applied"
    state = client.get("/api/v1/services/edge", headers=bearer(admin_token)).get_json()["rollout"]
    assert state["acknowledged"]["current"] and state["fetched"]["version"] == doc["version"]
    html = admin_client.get("/adapters").get_data(as_text=True)
    assert f"applied v{doc['version']}" in html
    client.post("/api/v1/services/edge/ack", headers=h, json={
        "version": doc["version"], "status": "failed", "message": "Not authorized (5)"})
    rollout = client.get("/api/v1/rollout", headers=bearer(admin_token)).get_json()
    assert rollout["counts"]["failed"] == 1 and "edge failed: Not authorized (5)" in rollout["text"]
    assert "Not authorized (5)" in admin_client.get("/adapters").get_data(as_text=True)


@pytest.mark.parametrize("body, field", [
    ({"version": "12", "status": "applied"}, "version"), ({"version": -1, "status": "applied"}, "version"),
    ({"version": 2**40, "status": "applied"}, "version"), ({"version": True, "status": "applied"}, "version"),
    ({"version": 1, "status": "done"}, "status"), ({"version": 1, "status": "failed", "message": 5}, "message"),
    ({"version": 1, "status": "failed", "message": "x" * 2001}, "message")])
def test_bad_acks_are_refused_per_field(client, edge, body, field) -> None:
    response = client.post("/api/v1/services/edge/ack", headers=bearer(edge["token"]), json=body)
    assert response.status_code == 422 and field in response.get_json()["errors"]


def test_ack_needs_the_services_own_token(client, edge, admin_token) -> None:
    assert client.post("/api/v1/services/edge/ack", headers=bearer(admin_token),
                       json={"version": 1, "status": "applied"}).status_code == 403
    assert client.post("/api/v1/services/edge/ack", headers=bearer(edge["token"]),
                       data="[1]", content_type="application/json").status_code == 400


def test_unknown_service_is_404(client, admin_token) -> None:
    assert client.get("/api/v1/services/ghost/config", headers=bearer(admin_token)).status_code == 404


def test_adapter_config_migrate_and_delete(app, client, edge, admin_token) -> None:
    h = bearer(admin_token)
    assert client.post("/api/v1/adapters", headers=h,
                       json={"name": "temp", "service": "edge"}).status_code == 201
    doc = client.get("/api/v1/adapters/temp/config", headers=h).get_json()
    assert doc["protocol"] == "mqtt" and not doc["diverges"]
    assert doc["settings"]["password"] == {"set": True}
    own = client.get("/api/v1/adapters/temp/config", headers=bearer(edge["token"])).get_json()
    assert own["settings"]["password"] == SECRET
    assert client.get("/api/v1/adapters/temp/config",
                      headers=bearer(edge["lake"])).status_code == 403
    assert client.patch("/api/v1/brokers/mqtt", headers=h,
                        json={"host": "mqtt-2.example", "confirm": True}).status_code == 200
    doc = client.get("/api/v1/adapters/temp/config", headers=h).get_json()
    assert doc["diverges"] and "address" in doc["differences"]
    assert doc["settings"]["host"] == "mqtt-2.example"
    migrated = client.post("/api/v1/adapters/temp/migrate", headers=h)
    assert migrated.status_code == 200 and not migrated.get_json()["diverges"]
    assert migrated.get_json()["snapshot"]["address"] == "mqtt-2.example:1883"
    assert client.post("/api/v1/adapters/ghost/migrate", headers=h).status_code == 404
    assert client.delete("/api/v1/adapters/temp", headers=h).status_code == 200
    assert client.get("/api/v1/adapters/temp/config", headers=h).status_code == 404
    with app.app_context():
        actions = [a for (a,) in db.session.execute(db.select(AuditEntry.action))]
        assert "migrate_adapter" in actions and "delete_adapter" in actions


def test_adapter_migrate_and_delete_on_the_page(client, edge, admin_token, admin_client) -> None:
    h = bearer(admin_token)
    client.post("/api/v1/adapters", headers=h, json={"name": "temp", "service": "edge"})
    client.patch("/api/v1/brokers/mqtt", headers=h, json={"host": "mqtt-2.example", "confirm": True})
    assert "Migrate" in admin_client.get("/adapters").get_data(as_text=True)
    response = admin_client.post("/adapters/temp/migrate", headers={"HX-Request": "true"})
    assert response.status_code == 200 and "now uses mqtt at mqtt-2.example:1883" in response.get_data(as_text=True)
    asked = admin_client.post("/adapters/temp/delete")             # without JavaScript: a question first
    assert asked.status_code == 200 and "<h1>Delete adapter temp?</h1>" in asked.get_data(as_text=True)
    assert 'data-adapter="temp"' in admin_client.get("/adapters").get_data(as_text=True)
    response = admin_client.post("/adapters/temp/delete", data={"confirm": "yes"})
    assert response.status_code == 302
    assert 'data-adapter="temp"' not in admin_client.get("/adapters").get_data(as_text=True)


def test_tokens_cli_api_and_page(app, client, admin_token, admin_client, viewer_client) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["tokens", "create", "svc", "--role", "service", "--service", "edge"])
    assert result.exit_code == 0 and len(result.output.strip()) > 20
    result = runner.invoke(args=["tokens", "create", "svc2", "--role", "service"])
    assert result.exit_code != 0 and "needs the name of the service" in result.output
    result = runner.invoke(args=["tokens", "create", "adm", "--role", "admin", "--service", "edge"])
    assert result.exit_code != 0 and "Only a token with the role service" in result.output
    assert "svc\tservice:edge" in runner.invoke(args=["tokens", "list"]).output
    h = bearer(admin_token)
    created = client.post("/api/v1/tokens", headers=h,
                          json={"name": "edge-2", "role": "service", "service": "edge"})
    assert created.status_code == 201 and created.get_json()["token"]
    listed = client.get("/api/v1/tokens", headers=h).get_json()["tokens"]
    assert {t["name"] for t in listed} >= {"svc", "edge-2", "ci-admin"}
    assert all("token" not in t and "digest" not in t for t in listed)
    bad = client.post("/api/v1/tokens", headers=h, json={"name": "", "role": "root"})
    assert bad.status_code == 422 and set(bad.get_json()["errors"]) == {"name", "role"}
    assert client.delete("/api/v1/tokens/edge-2", headers=h).status_code == 200
    assert client.delete("/api/v1/tokens/edge-2", headers=h).status_code == 404
    # the page: create shows the token once, revoke removes it
    page = admin_client.post("/tokens", data={"name": "page-token", "role": "viewer", "service": ""})
    html = page.get_data(as_text=True)
    token = re.search(r'class="secret-once">([^<]+)<', html).group(1)
    assert page.status_code == 200 and "shown once" in html
    assert client.get("/api/v1/brokers", headers=bearer(token)).status_code == 200
    assert token not in admin_client.get("/tokens").get_data(as_text=True)
    bad = admin_client.post("/tokens", data={"name": "x y", "role": "service", "service": ""})
    assert bad.status_code == 422 and "needs the name of the service" in bad.get_data(as_text=True)
    asked = admin_client.post("/tokens/page-token/revoke")         # without JavaScript: a question first
    assert asked.status_code == 200 and "<h1>Revoke token page-token?</h1>" in asked.get_data(as_text=True)
    assert client.get("/api/v1/brokers", headers=bearer(token)).status_code == 200
    assert admin_client.post("/tokens/page-token/revoke", data={"confirm": "yes"}).status_code == 200
    assert client.get("/api/v1/brokers", headers=bearer(token)).status_code == 401
    assert admin_client.post("/tokens/page-token/revoke", data={"confirm": "yes"}).status_code == 404
    assert viewer_client.get("/tokens").status_code == 403
    assert viewer_client.post("/tokens", data={"name": "v", "role": "admin"}).status_code == 403


def test_registration_on_the_page_shows_the_signing_secret_once(admin_client, client,
                                                                 admin_token) -> None:
    response = admin_client.post("/adapters/services", data={
        "name": "edge", "protocols": ["mqtt"], "callback_url": "http://127.0.0.1:9/hook"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "Signing secret of edge" in html
    secret = re.search(r'class="secret-once">([0-9a-f]{64})<', html).group(1)
    assert secret not in admin_client.get("/adapters").get_data(as_text=True)
    assert secret not in client.get("/api/v1/services", headers=bearer(admin_token)).get_data(as_text=True)
    bad = admin_client.post("/adapters/services", data={
        "name": "edge2", "protocols": ["mqtt"], "callback_url": "ftp://x/"})
    assert bad.status_code == 422 and "callback_url" in bad.get_data(as_text=True)
