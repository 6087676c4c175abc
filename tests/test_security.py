"""Roles on every route, CSRF on every state-changing request, secrets never coming back out."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from flask import Flask

from tests.conftest import ADMIN_PASSWORD, add_user

READ_ONLY_POSTS = {"adapters.connect", "api.check_connection"}
OPEN = {"static", "auth.login", "health.healthz", "health.readyz", "health.metrics", "api.openapi",
        "auth.oidc_start", "auth.oidc_callback"}   # sign-in itself (404 while OIDC is not configured)
SECRETS = {
    ("kafka", "password"): "kafka-sasl-Secret-1",
    ("pulsar", "token"): "pulsar-Token-Secret-2",
    ("pulsar", "oauth2_client_secret"): "pulsar-Oauth-Secret-3",
    ("mqtt", "password"): "mqtt-Pass-Secret-4",
    ("nats", "password"): "nats-Pass-Secret-5",
    ("rabbitmq", "password"): "rabbit-Pass-Secret-6",
}


def concrete_routes(app: Flask) -> list[tuple[str, str, str]]:
    """(endpoint, method, url) for every route, with sample path arguments."""
    samples = {"protocol": "kafka", "slot": "tls_ca", "filename": "console.css", "version_id": "1", "name": "edge",
               "run_id": "1", "user_id": "1", "rollout_id": "1", "sha256": "AB12"}
    out = []
    for rule in app.url_map.iter_rules():
        url = rule.rule
        for arg in rule.arguments:
            url = re.sub(rf"<(?:\w+:)?{arg}>", samples[arg], url)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((rule.endpoint, method, url))
    return out


def test_every_route_needs_login(app: Flask, client) -> None:
    routes = concrete_routes(app)
    assert len(routes) > 12
    for endpoint, method, url in routes:
        if endpoint in OPEN or endpoint == "index":
            continue
        response = client.open(url, method=method)
        assert response.status_code in (302, 401), (endpoint, method, response.status_code)
        if response.status_code == 302:
            assert "/login" in response.headers["Location"]


def test_viewer_cannot_change_anything(app: Flask, viewer_client) -> None:
    for endpoint, method, url in concrete_routes(app):
        if method == "GET" or endpoint in OPEN or endpoint in READ_ONLY_POSTS or endpoint == "auth.logout":
            continue
        kwargs = {"json": {"host": "x"}} if url.startswith("/api/") else {"data": {"host": "x"}}
        response = viewer_client.open(url, method=method, **kwargs)
        assert response.status_code == 403, (endpoint, method, response.status_code)
    for url in ("/settings/messaging", "/api/v1/brokers", "/api/v1/priorities"):
        assert viewer_client.get(url).status_code == 200


def test_csrf_rejected_on_every_state_changing_route(csrf_app: Flask) -> None:
    add_user(csrf_app, "admin", "admin", ADMIN_PASSWORD)
    client = csrf_app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    assert client.post("/login", data={"username": "admin", "password": ADMIN_PASSWORD}).status_code == 400
    assert client.post("/login", data={"username": "admin", "password": ADMIN_PASSWORD,
                                       "csrf_token": token}).status_code == 302
    checked = 0
    for endpoint, method, url in concrete_routes(csrf_app):
        if method == "GET" or endpoint in OPEN:
            continue
        headers = {"HX-Request": "true"}
        kwargs = {"json": {"host": "x"}} if url.startswith("/api/") else {"data": {"host": "x"}}
        response = client.open(url, method=method, headers=headers, **kwargs)
        assert response.status_code == 400, (endpoint, method, response.status_code)
        assert "CSRF" in response.get_data(as_text=True)
        checked += 1
    assert checked >= 7
    html = client.get("/settings/messaging").get_data(as_text=True)
    header_token = re.search(r'hx-headers=\'\{"X-CSRFToken": "([^"]+)"\}\'', html).group(1)
    ok = client.post("/settings/messaging/nats", data={"host": "n1"},
                     headers={"HX-Request": "true", "X-CSRFToken": header_token})
    assert ok.status_code == 200
    api = client.patch("/api/v1/brokers/nats", json={"host": "n2"},
                       headers={"X-CSRFToken": header_token})
    assert api.status_code == 200


def test_bearer_token_needs_no_csrf(csrf_app: Flask) -> None:
    from tests.conftest import make_token

    token = make_token(csrf_app, "robot", "admin")
    response = csrf_app.test_client().patch("/api/v1/brokers/nats", json={"host": "n3"},
                                            headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


@pytest.fixture
def secrets_everywhere(app: Flask, admin_client, pki):
    """Every kind of secret set through page, API and upload."""
    for (protocol, name), value in SECRETS.items():
        extra = {"username": "u"} if protocol in ("kafka", "mqtt", "nats") else {}
        if protocol == "kafka":
            extra["sasl_mechanism"] = "PLAIN"
        response = admin_client.patch(f"/api/v1/brokers/{protocol}", json={name: value, **extra})
        assert response.status_code == 200, response.get_json()
    admin_client.post("/settings/messaging/nats", headers={"HX-Request": "true"},
                      data={"password": "page-Form-Secret-7", "username": "u"})
    admin_client.post("/api/v1/brokers/mqtt/files/tls_cert",
                      data={"file": (pki["client.crt"].open("rb"), "c.crt"),
                            "key_file": (pki["client.key"].open("rb"), "c.key")})
    key_body = pki["client.key"].read_text().splitlines()[1]
    return [*SECRETS.values(), "page-Form-Secret-7", key_body]


def test_secrets_never_come_back_out(app: Flask, admin_client, viewer_client, runner,
                                     secrets_everywhere, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    bodies = []
    for c in (admin_client, viewer_client):
        for url in ("/settings/messaging", "/api/v1/brokers", "/api/v1/priorities",
                    "/api/v1/openapi.json", "/healthz"):
            bodies.append(c.get(url).get_data(as_text=True))
        for protocol in ("kafka", "pulsar", "mqtt", "nats", "rabbitmq"):
            bodies.append(c.get(f"/api/v1/brokers/{protocol}").get_data(as_text=True))
            bodies.append(c.get(f"/settings/messaging/{protocol}",
                                headers={"HX-Request": "true"}).get_data(as_text=True))
    bodies.append(admin_client.patch("/api/v1/brokers/nats", json={"password": "x" * 5000})
                  .get_data(as_text=True))
    for args in (["brokers", "list"], ["brokers", "list", "--json"]):
        result = runner.invoke(args=args)
        assert result.exit_code == 0, result.output
        bodies.append(result.output)
    bodies.append(caplog.text)
    everything = "\n".join(bodies)
    assert "nats" in everything and "(set)" in everything
    for secret in secrets_everywhere:
        assert secret not in everything, secret


def test_secrets_are_encrypted_in_the_database_file(app: Flask, secrets_everywhere) -> None:
    from console.extensions import db

    with app.app_context():
        db.engine.dispose()
    raw = (Path(app.instance_path) / "console.db").read_bytes()
    assert len(raw) > 10000
    for secret in secrets_everywhere:
        assert secret.encode() not in raw, secret


def test_changed_encryption_key_gives_a_clear_answer_not_a_traceback(app: Flask, admin_client) -> None:
    admin_client.patch("/api/v1/brokers/nats", json={"username": "u", "password": "secret-1"})
    app.extensions.pop("console_fernet")
    app.config["ENCRYPTION_KEY"] = "some-other-key"
    app.config["PROPAGATE_EXCEPTIONS"] = False
    page = admin_client.post("/settings/messaging/nats", headers={"HX-Request": "true"},
                             data={"host": "n2"})
    assert page.status_code == 500 and "CONSOLE_ENCRYPTION_KEY" in page.get_data(as_text=True)
    assert "Traceback" not in page.get_data(as_text=True)
    api = admin_client.post("/api/v1/brokers/nats/diagnose?timeout=1")
    assert api.status_code == 500 and api.get_json()["error"] == "secret_unreadable"
    assert admin_client.get("/settings/messaging").status_code == 200
