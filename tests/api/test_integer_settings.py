"""Every integer setting is a JSON integer in every answer, export and document, whether it was
given as a number or as text, saved or from the environment (issue 18 item 8: MQTT qos came out as
the string "1"). Walks every protocol's integer fields from the schema."""
from __future__ import annotations

import json

import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient

from console.brokers import PROTOCOLS
from console.messaging.schema import FIELDS, SCHEMA

INTEGERS = [(p, f) for p in PROTOCOLS for f in SCHEMA[p] if f.integer]


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _other(f) -> int:
    """A valid value of `f` other than its default."""
    if f.choices:
        return next(c for c in f.choices if c != f.default)
    value = (f.default or f.minimum or 0) + 1
    return value if f.maximum is None or value <= f.maximum else f.minimum


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def test_the_schema_knows_its_integers() -> None:
    names = {(p, f.name) for p, f in INTEGERS}
    assert ("mqtt", "qos") in names and ("mqtt", "keepalive") in names and ("kafka", "port") in names
    assert all(_is_int(f.default) for _, f in INTEGERS if f.default is not None)


def test_the_openapi_types_every_integer_setting_as_integer(client: FlaskClient, admin_token) -> None:
    schemas = client.get("/api/v1/openapi.json", headers=_auth(admin_token)).get_json()["components"]["schemas"]
    for protocol, f in INTEGERS:
        field = schemas[f"{protocol.capitalize()}Patch"]["properties"][f.name]
        assert "integer" in field["type"] and "string" not in field["type"], (protocol, f.name, field)
        assert all(_is_int(c) for c in field.get("enum", []) if c is not None)
        if f.default is not None:
            assert _is_int(field["default"]), (protocol, f.name)


@pytest.mark.parametrize("as_text", [True, False], ids=["given as text", "given as a number"])
def test_every_integer_setting_is_a_json_integer_everywhere(app: Flask, client: FlaskClient, admin_token,
                                                            runner, as_text: bool) -> None:
    h = _auth(admin_token)
    assert client.post("/api/v1/services", headers=h,
                       json={"name": "edge", "protocols": list(PROTOCOLS)}).status_code == 201
    for protocol in PROTOCOLS:               # defaults first
        settings = client.get(f"/api/v1/brokers/{protocol}", headers=h).get_json()["settings"]
        for f in SCHEMA[protocol]:
            if f.integer and settings[f.name]["value"] is not None:
                assert _is_int(settings[f.name]["value"]), (protocol, f.name, settings[f.name])
    wanted: dict[str, dict[str, int]] = {p: {} for p in PROTOCOLS}
    for protocol, f in INTEGERS:
        wanted[protocol][f.name] = _other(f)
    for protocol, values in wanted.items():
        body = {k: str(v) if as_text else v for k, v in values.items()}
        answer = client.patch(f"/api/v1/brokers/{protocol}", headers=h,
                              json={**body, "enabled": True, "confirm": True})
        assert answer.status_code == 200, answer.data[:500]
        for name, value in values.items():
            assert answer.get_json()["settings"][name]["value"] == value
            assert _is_int(answer.get_json()["settings"][name]["value"]), (protocol, name)
    versions = [v["id"] for v in client.get("/api/v1/versions", headers=h).get_json()["versions"]]
    diff = client.get(f"/api/v1/versions/{versions[0]}/diff?against={versions[-1]}",
                      headers=h).get_json()["changes"]
    shown = {(c["protocol"], c["field"]): c["new"] for c in diff}
    for protocol, values in wanted.items():
        for name, value in values.items():
            assert shown[(protocol, name)] == value and _is_int(shown[(protocol, name)])
    everything = client.get("/api/v1/brokers", headers=h).get_json()
    listed = json.loads(runner.invoke(args=["brokers", "list", "--json"]).output)
    exported = yaml.safe_load(client.get("/api/v1/config/export", headers=h).get_data(as_text=True))
    document = client.get("/api/v1/services/edge/config", headers=h).get_json()
    audit = client.get("/api/v1/audit", headers=h).get_json()["entries"]
    for protocol, values in wanted.items():
        one = client.get(f"/api/v1/brokers/{protocol}", headers=h).get_json()["settings"]
        many = everything["brokers"][protocol]["settings"]
        for name, value in values.items():
            seen = {"GET /brokers/<p>": one[name]["value"], "GET /brokers": many[name]["value"],
                    "brokers list --json": listed["brokers"][protocol]["settings"][name]["value"],
                    "export": exported["brokers"][protocol][name],
                    "service document": document["brokers"][protocol][name]}
            for where, got in seen.items():
                assert got == value and _is_int(got), (where, protocol, name, got)
        for f in SCHEMA[protocol]:      # every integer field of the document, changed or not
            got = document["brokers"][protocol].get(f.name)
            if f.integer and got is not None:
                assert _is_int(got), (protocol, f.name, got)
    changes = [c for e in audit for c in (e["changes"] or []) if isinstance(c, dict)
               and FIELDS.get(c.get("protocol") or "", {}).get(c.get("field"))
               and FIELDS[c["protocol"]][c["field"]].integer]
    assert changes and all(c["new"] is None or _is_int(c["new"]) for c in changes)


def test_an_integer_setting_from_the_environment_is_an_integer(client: FlaskClient, admin_token,
                                                               monkeypatch) -> None:
    monkeypatch.setenv("SP_MQTT_QOS", "2")
    monkeypatch.setenv("SP_MQTT_KEEPALIVE", "45")
    settings = client.get("/api/v1/brokers/mqtt", headers=_auth(admin_token)).get_json()["settings"]
    assert settings["qos"] == {**settings["qos"], "value": 2, "source": "env"}
    assert settings["keepalive"]["value"] == 45


@pytest.mark.parametrize("value", ["3", 3, 1.0, "1.0", True, "one", [1]])
def test_an_integer_choice_refuses_anything_else(client: FlaskClient, admin_token, value) -> None:
    answer = client.patch("/api/v1/brokers/mqtt", headers=_auth(admin_token), json={"qos": value})
    assert answer.status_code in (400, 422) and "qos" in answer.get_json()["errors"], answer.data[:300]
    assert client.get("/api/v1/brokers/mqtt", headers=_auth(admin_token)).get_json()[
        "settings"]["qos"]["value"] == 1


def test_an_imported_qos_is_an_integer(client: FlaskClient, admin_token) -> None:
    h = _auth(admin_token)
    for text in ("'0'", "2"):
        answer = client.post("/api/v1/config/import", headers=h,
                             data=f"messaging_console: 1\nbrokers: {{mqtt: {{qos: {text}}}}}\n")
        assert answer.status_code == 200, answer.data[:300]
        value = client.get("/api/v1/brokers/mqtt", headers=h).get_json()["settings"]["qos"]["value"]
        assert _is_int(value) and value == int(text.strip("'"))


def test_the_page_selects_the_saved_qos(client: FlaskClient, admin_client, admin_token) -> None:
    page = admin_client.get("/settings/messaging/mqtt").get_data(as_text=True)
    assert '<option value="1" selected>1</option>' in page and '<option value="0" >0</option>' in page
    saved = admin_client.post("/settings/messaging/mqtt", data={"qos": "0"}, follow_redirects=True)
    assert saved.status_code == 200
    assert client.get("/api/v1/brokers/mqtt", headers=_auth(admin_token)).get_json()[
        "settings"]["qos"]["value"] == 0
    page = admin_client.get("/settings/messaging/mqtt").get_data(as_text=True)
    assert '<option value="0" selected>0</option>' in page
