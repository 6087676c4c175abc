"""JSON API: same settings, validation and masking as the page; tokens; OpenAPI."""
from __future__ import annotations

import io
import re

from flask.testing import FlaskClient

from console.brokers import PROTOCOLS


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_anonymous_and_bad_token_get_401(client: FlaskClient, app) -> None:
    assert client.get("/api/v1/brokers").status_code == 401
    response = client.get("/api/v1/brokers", headers=bearer("mc_wrong"))
    assert response.status_code == 401 and response.get_json()["error"] == "unauthorized"


def test_get_one_broker_with_sources(client: FlaskClient, admin_token: str, monkeypatch) -> None:
    monkeypatch.setenv("SP_MQTT_PORT", "1999")
    body = client.get("/api/v1/brokers/mqtt", headers=bearer(admin_token)).get_json()
    assert body["protocol"] == "mqtt" and body["enabled"] is False
    assert body["settings"]["port"] == {"value": 1999, "source": "env", "env": "SP_MQTT_PORT"}
    assert body["settings"]["host"] == {"value": "localhost", "source": "default"}
    assert body["settings"]["password"] == {"value": {"set": False}, "source": "default"}


def test_list_all(client, viewer_token) -> None:
    body = client.get("/api/v1/brokers", headers=bearer(viewer_token)).get_json()
    assert set(body["brokers"]) == set(PROTOCOLS)


def test_patch_saves_and_masks(client, admin_token) -> None:
    response = client.patch("/api/v1/brokers/rabbitmq", headers=bearer(admin_token),
                            json={"host": "rmq.internal", "password": "api-secret", "vhost": "prod"})
    body = response.get_json()
    assert response.status_code == 200 and body["changed"] == ["host", "password", "vhost"]
    assert body["settings"]["password"] == {"value": {"set": True}, "source": "saved"}
    assert "api-secret" not in response.get_data(as_text=True)


def test_patch_invalid_gives_422_per_field_and_saves_nothing(client, admin_token) -> None:
    response = client.patch("/api/v1/brokers/kafka", headers=bearer(admin_token),
                            json={"host": "ok", "port": 0, "security_protocol": "SASL_PLAINTEXT",
                                  "nope": 1})
    body = response.get_json()
    assert response.status_code == 422
    assert set(body["errors"]) == {"port", "nope"}
    after = client.get("/api/v1/brokers/kafka", headers=bearer(admin_token)).get_json()
    assert after["settings"]["host"]["source"] == "default"
    rule = client.patch("/api/v1/brokers/kafka", headers=bearer(admin_token),
                        json={"security_protocol": "SASL_PLAINTEXT"})
    assert rule.status_code == 422 and "sasl_mechanism" in rule.get_json()["errors"]


def test_patch_bad_bodies_are_400(client, admin_token) -> None:
    for kwargs in ({"data": "not json", "content_type": "application/json"},
                   {"json": ["host"]}, {"json": {}}, {"data": "host=x"}):
        response = client.patch("/api/v1/brokers/nats", headers=bearer(admin_token), **kwargs)
        assert response.status_code == 400, kwargs
        assert response.get_json()["message"]


def test_wrong_types_are_field_errors(client, admin_token) -> None:
    response = client.patch("/api/v1/brokers/mqtt", headers=bearer(admin_token),
                            json={"host": 12, "port": "abc", "enabled": "perhaps",
                                  "client_id": {"x": 1}, "password": 5, "keepalive": 1.5})
    assert response.status_code == 422
    assert set(response.get_json()["errors"]) == {"host", "port", "enabled", "client_id",
                                                  "password", "keepalive"}


def test_unknown_protocol_is_404_json(client, admin_token) -> None:
    response = client.get("/api/v1/brokers/jms", headers=bearer(admin_token))
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"


def test_viewer_token_cannot_change(client, viewer_token) -> None:
    response = client.patch("/api/v1/brokers/nats", headers=bearer(viewer_token), json={"host": "x"})
    assert response.status_code == 403
    assert client.put("/api/v1/priorities", headers=bearer(viewer_token),
                      json={"priorities": list(PROTOCOLS)}).status_code == 403


def test_priorities_get_put(client, admin_token) -> None:
    order = ["mqtt", "nats", "kafka", "pulsar", "rabbitmq"]
    response = client.put("/api/v1/priorities", headers=bearer(admin_token), json={"priorities": order})
    assert response.status_code == 200 and response.get_json()["priorities"] == order
    assert client.get("/api/v1/priorities", headers=bearer(admin_token)).get_json()["priorities"] == order
    bad = client.put("/api/v1/priorities", headers=bearer(admin_token), json={"priorities": ["mqtt"]})
    assert bad.status_code == 422 and "missing" in bad.get_json()["errors"]["priorities"]
    assert client.put("/api/v1/priorities", headers=bearer(admin_token), json=["x"]).status_code == 400


def test_truststore_upload_and_delete(client, admin_token, pki) -> None:
    response = client.post("/api/v1/brokers/nats/files/tls_ca", headers=bearer(admin_token),
                           data={"file": (pki["ca.crt"].open("rb"), "ca.crt")})
    body = response.get_json()
    assert response.status_code == 201
    assert body["settings"]["tls_ca"]["value"]["certificates"][0]["subject"].startswith("CN=")
    bad = client.post("/api/v1/brokers/nats/files/tls_ca", headers=bearer(admin_token),
                      data={"file": (io.BytesIO(b"\x00\x01junk"), "x.bin")})
    assert bad.status_code == 422 and bad.get_json()["errors"]["tls_ca"]
    assert client.post("/api/v1/brokers/nats/files/tls_ca", headers=bearer(admin_token),
                       data={}).status_code == 400
    assert client.post("/api/v1/brokers/nats/files/other", headers=bearer(admin_token),
                       data={"file": (pki["ca.crt"].open("rb"), "ca.crt")}).status_code == 422
    deleted = client.delete("/api/v1/brokers/nats/files/tls_ca", headers=bearer(admin_token))
    assert deleted.get_json()["settings"]["tls_ca"]["value"] == {"set": False}


def test_keystore_upload_never_returns_the_key(client, admin_token, pki) -> None:
    response = client.post("/api/v1/brokers/mqtt/files/tls_cert", headers=bearer(admin_token),
                           data={"file": (pki["client.crt"].open("rb"), "client.crt"),
                                 "key_file": (pki["client.key"].open("rb"), "client.key")})
    text = response.get_data(as_text=True)
    assert response.status_code == 201 and "PRIVATE KEY" not in text
    assert response.get_json()["settings"]["tls_key"]["value"] == {"set": True}


def test_openapi_document(client) -> None:
    doc = client.get("/api/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    assert {"/brokers", "/brokers/kafka", "/brokers/rabbitmq", "/priorities",
            "/brokers/{protocol}/files/{slot}"} <= set(doc["paths"])
    kafka = doc["components"]["schemas"]["KafkaPatch"]["properties"]
    assert kafka["sasl_mechanism"]["enum"] == ["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", None]
    assert kafka["password"]["writeOnly"] is True and "tls_ca" not in kafka


def test_token_last_used_is_recorded(app, client, admin_token) -> None:
    from console.extensions import db
    from console.models import ApiToken

    client.get("/api/v1/brokers", headers=bearer(admin_token))
    with app.app_context():
        assert db.session.execute(db.select(ApiToken)).scalar_one().last_used_at is not None


def test_openapi_documents_every_api_route(app, client) -> None:
    doc = client.get("/api/v1/openapi.json").get_json()
    documented = {(path, method) for path, item in doc["paths"].items() for method in item
                  if method in ("get", "post", "put", "patch", "delete")}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.endpoint == "api.openapi":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule[len("/api/v1"):])
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            # a protocol's own path (its PATCH body is that protocol's fields) documents {protocol}
            concrete = [path.replace("{protocol}", p) for p in PROTOCOLS]
            assert (path, method.lower()) in documented or all(
                (c, method.lower()) in documented for c in concrete), (path, method)
