"""Services, adapters, protocol selection, impact preview and confirmation, audit, history,
rollback, export/import and environment drift."""
from __future__ import annotations

import json

import pytest
from flask import Flask

from console.adapters.service import select_protocol

HX = {"HX-Request": "true"}
ALL = ["kafka", "pulsar", "mqtt", "nats", "rabbitmq"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- protocol selection ------------------------------------------------------------------------

def test_selection_follows_priority_and_skips_disabled() -> None:
    s = select_protocol({"a": ["mqtt", "kafka"], "b": ["kafka", "mqtt", "nats"]}, ALL, ALL)
    assert s.protocol == "kafka"
    s = select_protocol({"a": ["mqtt", "kafka"], "b": ["kafka", "mqtt"]}, ALL, ["mqtt", "nats"])
    assert s.protocol == "mqtt"
    s = select_protocol({"a": ["mqtt", "kafka"], "b": ["kafka", "mqtt"]},
                        ["mqtt", "kafka", "pulsar", "nats", "rabbitmq"], ALL)
    assert s.protocol == "mqtt" and "first enabled protocol" in s.reason


def test_selection_tie_is_broken_by_priority_not_by_service_order() -> None:
    for services in ({"a": ["nats", "mqtt"], "b": ["mqtt", "nats"]},
                     {"b": ["mqtt", "nats"], "a": ["nats", "mqtt"]}):
        assert select_protocol(services, ["nats", "mqtt", "kafka", "pulsar", "rabbitmq"],
                               ALL).protocol == "nats"


def test_no_common_protocol_says_what_each_side_supports() -> None:
    s = select_protocol({"sensor": ["mqtt"], "store": ["kafka"]}, ALL, ALL)
    assert s.protocol is None
    assert s.reason == "No common protocol: sensor supports mqtt; store supports kafka."
    s = select_protocol({"a": ["mqtt"], "b": ["mqtt", "kafka"]}, ALL, ["kafka"])
    assert s.protocol is None and "common protocols (mqtt) are all disabled" in s.reason


# --- registry API --------------------------------------------------------------------------------

@pytest.fixture
def api(client, admin_token):
    """A small API client with the admin token."""
    class Api:
        def __getattr__(self, method):
            def call(url, **kw):
                kw.setdefault("headers", {}).update(bearer(admin_token))
                return getattr(client, method)(url, **kw)
            return call
    return Api()


def enable(api, *protocols: str, **extra) -> None:
    for p in protocols:
        response = api.patch(f"/api/v1/brokers/{p}", json={"enabled": True, **extra, "confirm": True})
        assert response.status_code == 200, response.get_json()


def test_register_update_and_reject_services(api) -> None:
    created = api.post("/api/v1/services", json={"name": "mqtt-adapter-svc", "protocols": ["mqtt", "KAFKA"]})
    assert created.status_code == 201 and created.get_json()["protocols"] == ["kafka", "mqtt"]
    updated = api.post("/api/v1/services", json={"name": "mqtt-adapter-svc", "protocols": ["nats"]})
    assert updated.status_code == 200 and updated.get_json()["protocols"] == ["nats"]
    for body, field in [({"name": "", "protocols": ["mqtt"]}, "name"),
                        ({"name": "x", "protocols": []}, "protocols"),
                        ({"name": "x", "protocols": ["jms"]}, "protocols"),
                        ({"name": "x", "protocols": "mqtt"}, "protocols")]:
        response = api.post("/api/v1/services", json=body)
        assert response.status_code == 422 and field in response.get_json()["errors"]
    assert api.post("/api/v1/services", data="x").status_code == 400
    names = [s["name"] for s in api.get("/api/v1/services").get_json()["services"]]
    assert names == ["mqtt-adapter-svc"]


def test_adapter_gets_protocol_and_secret_free_snapshot(api) -> None:
    enable(api, "mqtt", username="dev", password="mqtt-secret-pw")
    enable(api, "kafka")
    api.post("/api/v1/services", json={"name": "svc", "protocols": ["mqtt", "kafka"]})
    body = api.post("/api/v1/adapters", json={"name": "temp-sensor", "service": "svc"}).get_json()
    assert body["protocol"] == "kafka" and body["matches_current"] is True
    api.put("/api/v1/priorities", json={"priorities": ["mqtt", "kafka", "pulsar", "nats", "rabbitmq"],
                                        "confirm": True})
    body = api.post("/api/v1/adapters", json={"name": "humidity", "service": "svc"}).get_json()
    assert body["protocol"] == "mqtt"
    assert body["snapshot"]["address"] == "localhost:1883" and body["snapshot"]["username"] == "dev"
    assert "mqtt-secret-pw" not in json.dumps(body) and "password" not in body["snapshot"]
    again = api.post("/api/v1/adapters", json={"name": "humidity", "service": "svc"})
    assert again.status_code == 422 and "exists already" in again.get_json()["errors"]["name"]
    missing = api.post("/api/v1/adapters", json={"name": "x", "service": "nope"})
    assert missing.status_code == 422 and "No registered service" in missing.get_json()["errors"]["service"]


def test_adapter_on_service_without_enabled_protocol_is_refused(api) -> None:
    api.post("/api/v1/services", json={"name": "svc", "protocols": ["pulsar"]})
    response = api.post("/api/v1/adapters", json={"name": "a", "service": "svc"})
    assert response.status_code == 422 and "all disabled" in response.get_json()["errors"]["service"]


def test_connections_check(api, client, viewer_token) -> None:
    enable(api, "mqtt", "kafka")
    api.post("/api/v1/services", json={"name": "edge", "protocols": ["mqtt"]})
    api.post("/api/v1/services", json={"name": "core", "protocols": ["mqtt", "kafka"]})
    api.post("/api/v1/services", json={"name": "lake", "protocols": ["kafka"]})
    ok = client.post("/api/v1/connections/check", json={"services": ["edge", "core"]},
                     headers=bearer(viewer_token))
    assert ok.status_code == 200 and ok.get_json()["protocol"] == "mqtt"
    none = api.post("/api/v1/connections/check", json={"services": ["edge", "lake"]})
    assert none.status_code == 409 and none.get_json()["supported"] == {"edge": ["mqtt"], "lake": ["kafka"]}
    assert "No common protocol" in none.get_json()["reason"]
    assert api.post("/api/v1/connections/check", json={"services": ["edge"]}).status_code == 400
    assert api.post("/api/v1/connections/check", json={"services": ["edge", "ghost"]}).status_code == 422


# --- impact and confirmation ---------------------------------------------------------------------

@pytest.fixture
def fleet(api):
    """Two services and three adapters: two on MQTT, one on Kafka."""
    enable(api, "mqtt", "kafka")
    api.put("/api/v1/priorities", json={"priorities": ["mqtt", "kafka", "pulsar", "nats", "rabbitmq"]})
    api.post("/api/v1/services", json={"name": "edge", "protocols": ["mqtt", "kafka"]})
    api.post("/api/v1/services", json={"name": "lake", "protocols": ["kafka"]})
    for name, svc in (("m1", "edge"), ("m2", "edge"), ("k1", "lake")):
        assert api.post("/api/v1/adapters", json={"name": name, "service": svc}).status_code == 201
    return api


def kinds(response) -> dict[str, str]:
    return {a["adapter"]: a["kind"] for a in response.get_json()["impact"]["adapters"]}


def test_disabling_a_protocol_breaks_its_adapters(fleet) -> None:
    response = fleet.patch("/api/v1/brokers/mqtt", json={"enabled": False})
    assert response.status_code == 409 and response.get_json()["error"] == "confirmation_required"
    assert kinds(response) == {"m1": "breaks", "m2": "breaks"}
    assert fleet.get("/api/v1/brokers/mqtt").get_json()["enabled"] is True
    done = fleet.patch("/api/v1/brokers/mqtt", json={"enabled": False, "confirm": True})
    assert done.status_code == 200 and done.get_json()["enabled"] is False


def test_moving_a_broker_breaks_and_security_change_diverges(fleet) -> None:
    moved = fleet.patch("/api/v1/brokers/kafka", json={"host": "kafka-2"})
    item = moved.get_json()["impact"]["adapters"][0]
    assert (item["adapter"], item["kind"]) == ("k1", "breaks")
    assert "moves from localhost:9092 to kafka-2:9092" in item["reason"] and item["action"]
    diverged = fleet.patch("/api/v1/brokers/mqtt", json={"tls": True})
    assert kinds(diverged) == {"m1": "diverges", "m2": "diverges"}
    assert "tls" in diverged.get_json()["impact"]["adapters"][0]["reason"]
    creds = fleet.patch("/api/v1/brokers/mqtt", json={"username": "u", "password": "new-pw"})
    assert "credentials" in creds.get_json()["impact"]["adapters"][0]["reason"]
    assert "new-pw" not in creds.get_data(as_text=True)


def test_priority_change_reports_new_adapters_changing_protocol(fleet) -> None:
    response = fleet.put("/api/v1/priorities", json={"priorities": ["kafka", "mqtt", "pulsar", "nats", "rabbitmq"]})
    body = response.get_json()
    assert response.status_code == 409
    assert body["impact"]["services"] == [{"service": "edge", "from": "mqtt", "to": "kafka"}]
    assert kinds(response) == {"m1": "protocol_changes", "m2": "protocol_changes"}
    assert fleet.put("/api/v1/priorities", json={"priorities": ["kafka", "mqtt", "pulsar", "nats", "rabbitmq"],
                                                 "confirm": True}).status_code == 200


def test_runtime_and_unaffected_changes_save_directly(fleet) -> None:
    assert fleet.patch("/api/v1/brokers/mqtt", json={"keepalive": 45}).status_code == 200
    assert fleet.patch("/api/v1/brokers/nats", json={"host": "nats-2"}).status_code == 200
    assert fleet.patch("/api/v1/brokers/pulsar", json={"enabled": True}).status_code == 200


def test_dry_run_previews_without_saving(fleet) -> None:
    preview = fleet.patch("/api/v1/brokers/kafka", json={"port": 9093, "dry_run": True})
    body = preview.get_json()
    assert preview.status_code == 200 and body["status"] == "preview"
    assert body["effective_changes"] == [{"protocol": "kafka", "field": "port", "old": 9092,
                                          "new": 9093, "install_time": True}]
    assert body["impact"]["counts"]["breaks"] == 1
    assert fleet.get("/api/v1/brokers/kafka").get_json()["settings"]["port"]["value"] == 9092


def test_adapters_listing_shows_divergence(fleet) -> None:
    fleet.patch("/api/v1/brokers/mqtt", json={"clean_session": False})
    fleet.patch("/api/v1/brokers/mqtt", json={"client_id": "other", "confirm": True})
    body = fleet.get("/api/v1/adapters?per_page=2").get_json()
    assert body["total"] == 3 and len(body["adapters"]) == 2 and body["page"] == 1
    m1 = fleet.get("/api/v1/adapters?per_page=50").get_json()["adapters"]
    state = {a["name"]: (a["matches_current"], a["differences"]) for a in m1}
    assert state == {"k1": (True, []), "m1": (False, ["client_id"]), "m2": (False, ["client_id"])}
    assert body["drift"]["mqtt"]["diverged"] == 2 and body["drift"]["kafka"]["diverged"] == 0


def test_page_confirm_step(fleet, admin_client) -> None:
    first = admin_client.post("/settings/messaging/mqtt", headers=HX,
                              data={"host": "mqtt-new", "save_anyway": "1"})
    html = first.get_data(as_text=True)
    assert first.status_code == 409 and "Confirm and save" in html
    assert "m1" in html and "breaks" in html and "moves from localhost:1883 to mqtt-new:1883" in html
    assert fleet.get("/api/v1/brokers/mqtt").get_json()["settings"]["host"]["value"] == "localhost"
    second = admin_client.post("/settings/messaging/mqtt", headers=HX,
                               data={"host": "mqtt-new", "save_anyway": "1", "confirm": "1"})
    assert second.status_code == 200 and "Saved: host." in second.get_data(as_text=True)


def test_page_priority_confirm(fleet, admin_client) -> None:
    first = admin_client.post("/settings/messaging/priorities", headers=HX, data={"move": "kafka:up"})
    assert first.status_code == 409 and "Confirm new priority" in first.get_data(as_text=True)
    second = admin_client.post("/settings/messaging/priorities", headers=HX,
                               data={"move": "kafka:up", "confirm": "1"})
    assert second.status_code == 200
    assert fleet.get("/api/v1/priorities").get_json()["priorities"][0] == "kafka"


def test_adapters_page_lists_and_forms_work(fleet, admin_client) -> None:
    html = admin_client.get("/adapters").get_data(as_text=True)
    assert 'data-adapter="m1"' in html and "matches" in html and "New adapters get" in html
    made = admin_client.post("/adapters/new", headers=HX, data={"name": "m3", "service": "edge"})
    assert made.status_code == 200 and "Adapter m3 created on mqtt" in made.get_data(as_text=True)
    bad = admin_client.post("/adapters/services", headers=HX, data={"name": "x"})
    assert bad.status_code == 422 and "protocols" in bad.get_data(as_text=True)
    svc = admin_client.post("/adapters/services", headers=HX, data={"name": "new-svc", "protocols": ["nats"]})
    assert "Service new-svc registered" in svc.get_data(as_text=True)
    conn = admin_client.post("/adapters/connect", headers=HX, data={"services": ["edge", "lake"]})
    assert "They would talk over <strong>kafka</strong>" in conn.get_data(as_text=True)


def test_environment_drift_is_shown(fleet, admin_client, monkeypatch) -> None:
    monkeypatch.setenv("SP_MQTT_PORT", "1999")
    html = admin_client.get("/adapters").get_data(as_text=True)
    assert "Environment drift" in html and "SP_MQTT_PORT" in html and "<strong>m1</strong>" in html


# --- audit --------------------------------------------------------------------------------------

def test_audit_records_every_path(app: Flask, fleet, admin_client, runner, monkeypatch, tmp_path) -> None:
    fleet.patch("/api/v1/brokers/mqtt", json={"port": 0})
    fleet.patch("/api/v1/brokers/mqtt", json={"enabled": False})
    admin_client.post("/settings/messaging/nats", headers=HX, data={"host": "nats-page"})
    admin_client.post("/settings/messaging/nats", headers=HX, data={"port": "x"})
    fleet.patch("/api/v1/brokers/nats", json={"password": "audit-secret-1", "username": "u"})
    export = tmp_path / "c.yaml"
    runner.invoke(args=["config", "export", "-o", str(export)])
    export.write_text(export.read_text().replace("nats-page", "nats-cli"))
    assert runner.invoke(args=["config", "import", str(export)]).exit_code == 0
    monkeypatch.setenv("SP_KAFKA_HOST", "kafka-env")
    with app.app_context():
        from console.settings.changes import record_environment
        assert record_environment() is not None
        assert record_environment() is None
    entries = fleet.get("/api/v1/audit?per_page=100").get_json()["entries"]
    seen = {(e["origin"], e["action"], e["outcome"]) for e in entries}
    for expected in [("api", "update", "rejected"), ("api", "update", "confirmation_required"),
                     ("page", "update", "applied"), ("page", "update", "rejected"),
                     ("api", "update", "applied"), ("cli", "import", "applied"),
                     ("env", "environment", "applied"), ("api", "register_service", "applied"),
                     ("api", "create_adapter", "applied"), ("api", "priorities", "applied")]:
        assert expected in seen, expected
    text = json.dumps(entries)
    assert "audit-secret-1" not in text and '"change": "changed"' in text
    page_entry = next(e for e in entries if e["origin"] == "page" and e["outcome"] == "applied")
    assert page_entry["actor"] == "admin" and page_entry["changes"][0]["new"] == "nats-page"
    assert page_entry["remote"] == "127.0.0.1"
    env_entry = next(e for e in entries if e["action"] == "environment")
    assert "SP_KAFKA_HOST=kafka-env" in env_entry["summary"]


def test_audit_filters_on_api_and_page(fleet, admin_client) -> None:
    fleet.patch("/api/v1/brokers/mqtt", json={"port": 0})
    rejected = fleet.get("/api/v1/audit?outcome=rejected").get_json()
    assert rejected["total"] == 1 and rejected["entries"][0]["protocols"] == ["mqtt"]
    assert fleet.get("/api/v1/audit?protocol=kafka&action=update").get_json()["total"] >= 1
    assert fleet.get("/api/v1/audit?q=port").get_json()["total"] == 1
    assert fleet.get("/api/v1/audit?since=yesterday").status_code == 400
    html = admin_client.get("/audit?outcome=rejected").get_data(as_text=True)
    assert "1 entry" in html and "Rejected: port" in html
    fragment = admin_client.get("/audit?action=create_adapter", headers=HX).get_data(as_text=True)
    assert fragment.startswith('<div id="entries">') and "3 entries" in fragment
    assert "must be a date" in admin_client.get("/audit?since=soon").get_data(as_text=True)


# --- history and rollback ------------------------------------------------------------------------

def test_history_diff_and_rollback_round_trip(fleet, admin_client) -> None:
    before = fleet.get("/api/v1/brokers").get_json()
    versions = fleet.get("/api/v1/versions").get_json()["versions"]
    start = versions[0]["id"]
    fleet.patch("/api/v1/brokers/kafka", json={"port": 9093, "confirm": True})
    fleet.patch("/api/v1/brokers/nats", json={"token": "tok-1"})
    latest = fleet.get("/api/v1/versions").get_json()["versions"][0]["id"]
    diff = fleet.get(f"/api/v1/versions/{latest}/diff?against={start}").get_json()["changes"]
    assert {"protocol": "kafka", "field": "port", "old": None, "new": 9093, "install_time": True} in diff
    assert {"protocol": "nats", "field": "token", "change": "changed", "install_time": True} in diff
    back = fleet.post(f"/api/v1/versions/{start}/rollback", json={})
    assert back.status_code == 200 and back.get_json()["status"] == "applied"
    assert back.get_json()["impact"]["adapters"] == []
    needs = fleet.post(f"/api/v1/versions/{latest}/rollback", json={"dry_run": True})
    assert needs.status_code == 200 and kinds(needs) == {"k1": "breaks"}
    after = fleet.get("/api/v1/brokers").get_json()
    assert after == before
    page = admin_client.get(f"/settings/messaging/history?a={start}&b={latest}").get_data(as_text=True)
    assert f"Version {start} → version {latest}" in page and "<em>changed</em>" in page
    preview = admin_client.get(f"/settings/messaging/history/{latest}/preview", headers=HX)
    assert "Confirm rollback" in preview.get_data(as_text=True)
    applied = admin_client.post(f"/settings/messaging/history/{latest}/rollback", headers=HX,
                                data={"confirm": "1"})
    assert "Rolled back to version" in applied.get_data(as_text=True)
    assert fleet.get("/api/v1/brokers/kafka").get_json()["settings"]["port"]["value"] == 9093
    again = fleet.post(f"/api/v1/versions/{start}/rollback", json={})
    assert again.status_code == 200
    refused = fleet.post(f"/api/v1/versions/{latest}/rollback", json={})
    assert refused.status_code == 409 and kinds(refused) == {"k1": "breaks"}
    assert fleet.post("/api/v1/versions/9999/rollback", json={}).status_code == 404
    assert fleet.get(f"/api/v1/versions/{latest}/diff").status_code == 400


# --- export / import -----------------------------------------------------------------------------

def test_export_import_round_trip_on_a_fresh_database(app, fleet, runner, tmp_path, pki) -> None:
    from tests.conftest import make_app, make_token

    fleet.patch("/api/v1/brokers/kafka", json={"bootstrap_servers": "k1:9092,k2:9092",
                                               "sasl_mechanism": "SCRAM-SHA-256", "username": "svc",
                                               "password": "kafka-pw", "confirm": True})
    fleet.patch("/api/v1/brokers/rabbitmq", json={"vhost": "prod", "prefetch": 20})
    fleet.post("/api/v1/brokers/mqtt/files/tls_ca", data={"file": (pki["ca.crt"].open("rb"), "ca.crt"),
                                                          "confirm": "true"})
    exported = fleet.get("/api/v1/config/export").get_data(as_text=True)
    assert "kafka-pw" not in exported and "PRIVATE KEY" not in exported and "k2:9092" in exported
    path = tmp_path / "export.yaml"
    path.write_text(exported)
    fresh = make_app(tmp_path / "fresh")
    result = fresh.test_cli_runner().invoke(args=["config", "import", str(path)])
    assert result.exit_code == 0, result.output
    assert "warning: kafka.password: SASL needs a password." in result.output
    token = make_token(fresh, "t", "admin")
    theirs = fresh.test_client().get("/api/v1/brokers", headers=bearer(token)).get_json()
    ours = fleet.get("/api/v1/brokers").get_json()
    for protocol in ALL:
        mine, copy = ours["brokers"][protocol]["settings"], theirs["brokers"][protocol]["settings"]
        for name in mine:
            if name in ("password", "tls_key"):
                continue
            assert copy[name]["value"] == mine[name]["value"], (protocol, name)
    assert theirs["brokers"]["kafka"]["settings"]["password"]["value"] == {"set": False}
    again = fresh.test_cli_runner().invoke(args=["config", "import", str(path)])
    assert "nothing to do" in again.output


def test_import_keeps_stored_secrets_and_previews(fleet, runner, tmp_path) -> None:
    fleet.patch("/api/v1/brokers/nats", json={"token": "keep-me"})
    text = fleet.get("/api/v1/config/export").get_data(as_text=True).replace("nats: {}", "nats:\n    host: nats-9")
    path = tmp_path / "e.yaml"
    path.write_text(text)
    dry = runner.invoke(args=["config", "import", str(path), "--dry-run"])
    assert dry.exit_code == 0 and "Dry run" in dry.output and "NATS host: localhost → nats-9" in dry.output
    assert fleet.get("/api/v1/brokers/nats").get_json()["settings"]["host"]["value"] == "localhost"
    assert runner.invoke(args=["config", "import", str(path)]).exit_code == 0
    nats = fleet.get("/api/v1/brokers/nats").get_json()["settings"]
    assert nats["host"]["value"] == "nats-9" and nats["token"]["value"] == {"set": True}


@pytest.mark.parametrize("text,where", [
    ("brokers: [", "file"),
    ("just a string", "file"),
    ("messaging_console: 1\nbrokers:\n  kafka:\n    port: 0\n  mqtt:\n    host: ok\n", "kafka.port"),
    ("messaging_console: 1\nbrokers:\n  jms: {}\n", "jms"),
    ("messaging_console: 1\nbrokers:\n  nats:\n    password: x\n", "nats.password"),
    ("messaging_console: 1\nbrokers:\n  kafka:\n    security_protocol: SASL_SSL\n    tls: true\n",
     "kafka.sasl_mechanism"),
    ("messaging_console: 1\npriorities: [kafka]\nbrokers: {}\n", "priorities"),
    ("messaging_console: 2\nbrokers: {}\n", "file"),
    ("messaging_console: 1\nbrokers:\n  mqtt:\n    tls_ca: {filename: x, pem: nope}\n", "mqtt.tls_ca"),
])
def test_broken_import_changes_nothing(fleet, runner, tmp_path, text, where) -> None:
    before = fleet.get("/api/v1/config/export").get_data(as_text=True).split("exported_at", 1)[1].split("\n", 1)[1]
    versions = len(fleet.get("/api/v1/versions").get_json()["versions"])
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = runner.invoke(args=["config", "import", str(path)])
    assert result.exit_code == 1 and f"  {where}:" in result.output
    api = fleet.post("/api/v1/config/import", data=text, content_type="application/yaml")
    assert api.status_code == 422 and where in api.get_json()["errors"]
    exported = fleet.get("/api/v1/config/export").get_data(as_text=True)
    assert exported.split("exported_at", 1)[1].split("\n", 1)[1] == before
    assert len(fleet.get("/api/v1/versions").get_json()["versions"]) == versions


def test_import_needing_confirmation(fleet, tmp_path, runner) -> None:
    text = fleet.get("/api/v1/config/export").get_data(as_text=True).replace(
        "enabled: true", "enabled: false")
    path = tmp_path / "off.yaml"
    path.write_text(text)
    refused = runner.invoke(args=["config", "import", str(path)])
    assert refused.exit_code == 1 and "repeat with --confirm" in refused.output and "breaks" in refused.output
    api = fleet.post("/api/v1/config/import?dry_run=true", data=text)
    assert api.status_code == 200 and api.get_json()["impact"]["counts"]["breaks"] == 3
    assert runner.invoke(args=["config", "import", str(path), "--confirm"]).exit_code == 0


# --- words an operator reads as they are --------------------------------------------------------

def test_the_same_broker_spelt_otherwise_is_not_breaks(fleet) -> None:
    respelt = fleet.patch("/api/v1/brokers/mqtt", json={"host": "127.0.0.1"})
    assert respelt.status_code == 409 and kinds(respelt) == {"m1": "diverges", "m2": "diverges"}
    reason = respelt.get_json()["impact"]["adapters"][0]["reason"]
    assert "address localhost:1883 (the same broker as 127.0.0.1:1883)" in reason
    moved = fleet.patch("/api/v1/brokers/mqtt", json={"host": "127.0.0.2"})
    assert kinds(moved) == {"m1": "breaks", "m2": "breaks"}
    other_port = fleet.patch("/api/v1/brokers/mqtt", json={"host": "127.0.0.1", "port": 1884})
    assert kinds(other_port) == {"m1": "breaks", "m2": "breaks"}


def test_history_diff_names_the_default_like_the_version_list(fleet, admin_client) -> None:
    fleet.patch("/api/v1/brokers/nats", json={"host": "nats-a"})
    fleet.patch("/api/v1/brokers/nats", json={"host": None})
    page = admin_client.get("/settings/messaging/history").get_data(as_text=True)
    diff = page.split('<section id="diff"', 1)[1].split("</section>", 1)[0]
    assert "<td>nats-a</td><td>localhost (default)</td>" in diff
    assert "(none)" not in diff and "<td></td>" not in diff
    assert "NATS host: nats-a → localhost (default)" in page, "the version list words it alike"
    from console.settings.changes import FieldChange

    order = FieldChange(None, "priorities", [], ["mqtt", "kafka"])
    assert (order.shown_old, order.shown_new) == ("(default order)", "mqtt > kafka")


def _field_row(html: str, name: str) -> str:
    return html.split(f'data-field="{name}"', 1)[1].split('<div class="field', 1)[0]


def test_confirm_step_does_not_call_typed_values_saved(fleet, admin_client) -> None:
    fleet.patch("/api/v1/brokers/mqtt", json={"host": "mqtt-a", "confirm": True})
    fleet.post("/api/v1/adapters", json={"name": "m3", "service": "edge"})
    step = admin_client.post("/settings/messaging/mqtt", headers=HX,
                             data={"host": "mqtt-b", "port": "1883", "save_anyway": "1"})
    html = step.get_data(as_text=True)
    assert step.status_code == 409 and "Confirm and save" in html
    host = _field_row(html, "host")
    assert 'value="mqtt-b"' in host and ">unsaved</span>" in host and "src-saved" not in host
    assert "in effect is mqtt-a (saved)" in host
    port = _field_row(html, "port")
    assert "unsaved" not in port and "src-default" in port, "an untouched value keeps its source"


def test_importing_an_unchanged_export_records_nothing(app: Flask, runner, tmp_path) -> None:
    """The default priority order is exported as a list; importing it back is not a saved order."""
    from console.models import ConfigVersion
    from console.settings import service

    with app.app_context():
        service.apply_changes("mqtt", {"enabled": True, "host": "m1"}, "t")
        from console.extensions import db
        count = db.session.execute(db.select(db.func.count(ConfigVersion.id))).scalar()
    target = tmp_path / "c.yaml"
    assert runner.invoke(args=["config", "export", "-o", str(target)]).exit_code == 0
    again = runner.invoke(args=["config", "import", str(target)])
    assert again.exit_code == 0 and "nothing to do" in again.output, again.output
    with app.app_context():
        assert db.session.execute(db.select(db.func.count(ConfigVersion.id))).scalar() == count
        assert service.priorities()[1]["source"] == "default"
