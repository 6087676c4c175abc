"""Every boolean of the API is a JSON boolean (true/false in a query string or form) or a 400 naming
the field, with nothing changed: confirm and dry_run of every change and the wait of a diagnosis; a
protocol's boolean settings are field errors (422) like any setting of the wrong type (issue 18
item 10)."""
from __future__ import annotations

import pytest
from flask.testing import FlaskClient

NOT_BOOLEANS = [{"a": 1}, [True], "yes", "true", 1, 0, "", None]


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _refused(response, name: str) -> None:
    assert response.status_code == 400, (name, response.status_code, response.data[:300])
    body = response.get_json()
    assert body["error"] == "bad_request" and name in body["errors"], body
    assert name in body["message"]


def _version(client: FlaskClient, token: str) -> int:
    response = client.patch("/api/v1/brokers/kafka", headers=_auth(token), json={"host": "k-one"})
    assert response.status_code == 200, response.data[:300]
    return int(response.get_json()["version"])


@pytest.mark.parametrize("value", NOT_BOOLEANS)
def test_rollback_confirm_and_dry_run_must_be_booleans(client: FlaskClient, admin_token: str,
                                                       value) -> None:
    first = _version(client, admin_token)
    client.patch("/api/v1/brokers/kafka", headers=_auth(admin_token), json={"host": "k-two"})
    for name in ("confirm", "dry_run"):
        response = client.post(f"/api/v1/versions/{first}/rollback", headers=_auth(admin_token),
                               json={name: value})
        _refused(response, name)
    host = client.get("/api/v1/brokers/kafka", headers=_auth(admin_token)).get_json()
    assert host["settings"]["host"]["value"] == "k-two"          # nothing rolled back


@pytest.mark.parametrize("value", NOT_BOOLEANS)
def test_patch_options_and_boolean_settings_must_be_booleans(client: FlaskClient, admin_token: str,
                                                             value) -> None:
    for body, name in (({"host": "x", "confirm": value}, "confirm"),
                       ({"host": "x", "dry_run": value}, "dry_run")):
        _refused(client.patch("/api/v1/brokers/kafka", headers=_auth(admin_token), json=body), name)
    if value is not None:                              # null resets a setting to its default
        # a setting is a field error like every setting of the wrong type (422, each one named)
        for dry_run in (False, True):
            response = client.patch("/api/v1/brokers/kafka", headers=_auth(admin_token),
                                    json={"tls": value, "enabled": value, "port": "x",
                                          "dry_run": dry_run})
            assert response.status_code == 422, response.data[:300]
            assert set(response.get_json()["errors"]) == {"tls", "enabled", "port"}
    document = client.get("/api/v1/brokers/kafka", headers=_auth(admin_token)).get_json()
    assert document["settings"]["host"]["value"] == "localhost" and document["enabled"] is False


@pytest.mark.parametrize("value", NOT_BOOLEANS[:-1])
def test_priorities_options_must_be_booleans(client: FlaskClient, admin_token: str, value) -> None:
    for name in ("confirm", "dry_run"):
        response = client.put("/api/v1/priorities", headers=_auth(admin_token),
                              json={"priorities": ["mqtt", "kafka", "nats", "rabbitmq", "pulsar"],
                                    name: value})
        _refused(response, name)
    assert client.get("/api/v1/priorities", headers=_auth(admin_token)).get_json()[
        "source"]["source"] == "default"


@pytest.mark.parametrize("raw", ["1", "yes", "on", "", "maybe"])
def test_query_and_form_booleans_are_true_or_false(client: FlaskClient, admin_token: str,
                                                   raw: str) -> None:
    _refused(client.post(f"/api/v1/config/import?dry_run={raw}", headers=_auth(admin_token),
                         data="brokers: {mqtt: {keepalive: 45}}\n",
                         content_type="application/yaml"), "dry_run")
    _refused(client.post(f"/api/v1/brokers/kafka/diagnose?wait={raw}", headers=_auth(admin_token)),
             "wait")
    upload = client.post("/api/v1/brokers/kafka/files/tls_ca", headers=_auth(admin_token),
                         data={"file": (__import__("io").BytesIO(b"x"), "ca.pem"), "confirm": raw})
    _refused(upload, "confirm")


def test_true_and_false_still_work(client: FlaskClient, admin_token: str) -> None:
    preview = client.patch("/api/v1/brokers/kafka", headers=_auth(admin_token),
                           json={"host": "k-one", "dry_run": True, "confirm": False})
    assert preview.status_code == 200 and "changes" in preview.get_json()
    saved = client.patch("/api/v1/brokers/kafka", headers=_auth(admin_token),
                         json={"tls": True, "dry_run": False})
    assert saved.status_code == 200 and saved.get_json()["changed"] == ["tls"]
    query = client.post("/api/v1/config/import?dry_run=TRUE", headers=_auth(admin_token),
                        data="brokers: {mqtt: {keepalive: 45}}\n", content_type="application/yaml")
    assert query.status_code == 200, query.data[:300]
