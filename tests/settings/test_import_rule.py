"""Import has one rule: it changes what the file names and nothing else (a field given as null goes
back to its default); `replace` resets everything the file leaves out. The dry run says which rule
it applies (issue 18 item 4: a file holding only mqtt.keepalive disabled NATS and RabbitMQ and reset
their hosts)."""
from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from console.settings.transfer import MERGE_RULE, REPLACE_RULE

PARTIAL = "brokers: {mqtt: {keepalive: 45}}\n"
ORDER = ["mqtt", "kafka", "nats", "rabbitmq", "pulsar"]


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _setting(client: FlaskClient, token: str, protocol: str, name: str):
    return client.get(f"/api/v1/brokers/{protocol}", headers=_auth(token)).get_json()[
        "settings"][name]["value"]


def _saved(client: FlaskClient, token: str) -> None:
    for protocol, body in (("nats", {"enabled": True, "host": "nats.internal"}),
                           ("rabbitmq", {"enabled": True, "host": "rmq.internal"}),
                           ("mqtt", {"host": "mqtt.internal"})):
        response = client.patch(f"/api/v1/brokers/{protocol}", headers=_auth(token),
                                json={**body, "confirm": True})
        assert response.status_code == 200, response.data[:300]
    assert client.put("/api/v1/priorities", headers=_auth(token),
                      json={"priorities": ORDER, "confirm": True}).status_code == 200


def _import(client: FlaskClient, token: str, text: str, query: str = ""):
    return client.post(f"/api/v1/config/import{query}", headers=_auth(token), data=text,
                       content_type="application/yaml")


def test_a_partial_import_changes_only_what_it_names(client: FlaskClient, admin_token: str) -> None:
    _saved(client, admin_token)
    preview = _import(client, admin_token, PARTIAL, "?dry_run=true")
    assert preview.status_code == 200 and preview.get_json()["rule"] == MERGE_RULE
    assert [c["field"] for c in preview.get_json()["changes"]] == ["keepalive"], preview.get_json()
    applied = _import(client, admin_token, PARTIAL, "?confirm=true")
    assert applied.status_code == 200, applied.data[:300]
    assert _setting(client, admin_token, "mqtt", "keepalive") == 45
    assert _setting(client, admin_token, "mqtt", "host") == "mqtt.internal"
    for protocol, host in (("nats", "nats.internal"), ("rabbitmq", "rmq.internal")):
        assert _setting(client, admin_token, protocol, "enabled") is True
        assert _setting(client, admin_token, protocol, "host") == host
    assert client.get("/api/v1/priorities", headers=_auth(admin_token)).get_json()[
        "priorities"] == ORDER


def test_null_resets_a_named_field(client: FlaskClient, admin_token: str) -> None:
    _saved(client, admin_token)
    applied = _import(client, admin_token, "brokers: {nats: {host: null}}\n", "?confirm=true")
    assert applied.status_code == 200, applied.data[:300]
    assert _setting(client, admin_token, "nats", "host") == "localhost"
    assert _setting(client, admin_token, "nats", "enabled") is True


def test_replace_resets_what_the_file_leaves_out(client: FlaskClient, admin_token: str) -> None:
    _saved(client, admin_token)
    preview = _import(client, admin_token, PARTIAL, "?dry_run=true&replace=true")
    assert preview.status_code == 200 and preview.get_json()["rule"] == REPLACE_RULE
    applied = _import(client, admin_token, PARTIAL, "?replace=true&confirm=true")
    assert applied.status_code == 200, applied.data[:300]
    assert _setting(client, admin_token, "mqtt", "keepalive") == 45
    assert _setting(client, admin_token, "mqtt", "host") == "localhost"
    assert _setting(client, admin_token, "nats", "enabled") is False
    assert _setting(client, admin_token, "rabbitmq", "host") == "localhost"
    assert client.get("/api/v1/priorities", headers=_auth(admin_token)).get_json()[
        "source"]["source"] == "default"


def test_the_cli_dry_run_says_the_rule(app: Flask, admin_token: str, tmp_path) -> None:
    path = tmp_path / "partial.yaml"
    path.write_text(PARTIAL)
    runner = app.test_cli_runner()
    merged = runner.invoke(args=["config", "import", str(path), "--dry-run"])
    assert merged.exit_code == 0 and MERGE_RULE in merged.output, merged.output
    replaced = runner.invoke(args=["config", "import", str(path), "--dry-run", "--replace"])
    assert replaced.exit_code == 0 and REPLACE_RULE in replaced.output, replaced.output
