"""Diagnostics where users meet them: CLI, API, the page's live steps, reports without secrets,
the certificate inventory (uploaded and presented), /readyz and /metrics — against the lab."""
from __future__ import annotations

import json
import re
import time

from flask import Flask

from console.diagnostics.base import STEPS
from console.settings import service

HX = {"HX-Request": "true"}


def point(app: Flask, protocol: str, **values) -> None:
    with app.app_context():
        result = service.apply_changes(protocol, {"enabled": True, **values}, "test", confirm=True)
        assert result.errors == {}, result.errors


def test_cli_diagnose_healthy_and_broken(app: Flask, runner, lab) -> None:
    point(app, "nats", host="127.0.0.1", port=lab["brokers"]["nats"]["plain"])
    ok = runner.invoke(args=["brokers", "diagnose", "nats", "--json", "--timeout", "3"])
    body = json.loads(ok.output)
    assert ok.exit_code == 0 and body["ok"] is True and body["cause"] == "ok"
    assert set(body) >= {"protocol", "ok", "cause", "summary", "fix", "steps"}
    assert [s["name"] for s in body["steps"]] == list(STEPS)
    assert all(s["status"] in ("ok", "not_applicable") for s in body["steps"])
    point(app, "nats", port=lab["faults"]["refused"])
    bad = runner.invoke(args=["brokers", "diagnose", "nats", "--timeout", "3"])
    assert bad.exit_code == 1
    assert "Cause: connection_refused" in bad.output and "Fix:" in bad.output
    assert "skipped" in bad.output


def test_api_diagnose_and_report_without_secrets(app: Flask, client, admin_token, lab) -> None:
    rabbit = lab["brokers"]["rabbitmq"]
    point(app, "rabbitmq", host="127.0.0.1", port=rabbit["plain"], username=rabbit["username"],
          password=rabbit["password"], vhost="no-such-vhost")
    headers = {"Authorization": f"Bearer {admin_token}"}
    body = client.post("/api/v1/brokers/rabbitmq/diagnose?timeout=3", headers=headers).get_json()
    assert body["ok"] is False and body["cause"] == "not_found"
    assert "no-such-vhost" in body["summary"] + body["fix"]
    again = client.get(f"/api/v1/diagnoses/{body['id']}", headers=headers).get_json()
    assert again["cause"] == "not_found" and again["status"] == "done"
    report = client.get(f"/api/v1/diagnoses/{body['id']}/report", headers=headers)
    text = report.get_data(as_text=True)
    assert report.status_code == 200 and rabbit["password"] not in text
    assert json.loads(text)["settings"]["password"]["value"] == {"set": True}
    assert client.post("/api/v1/brokers/rabbitmq/diagnose?timeout=x", headers=headers).status_code == 400
    assert client.get("/api/v1/diagnoses/999", headers=headers).status_code == 404


def test_page_diagnose_shows_steps_then_result(app: Flask, admin_client, lab) -> None:
    point(app, "mqtt", host="127.0.0.1", port=lab["faults"]["silent"])
    started = admin_client.post("/settings/messaging/mqtt/diagnose", headers=HX)
    html = started.get_data(as_text=True)
    assert started.status_code == 202 and 'data-status="running"' in html
    assert 'hx-trigger="every 400ms"' in html
    run_id = int(html.split('id="diagnosis-')[1].split('"')[0])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        html = admin_client.get(f"/settings/messaging/diagnoses/{run_id}", headers=HX).get_data(as_text=True)
        if 'data-status="done"' in html:
            break
        time.sleep(0.2)
    assert 'data-status="done"' in html and "hx-trigger" not in html
    assert "handshake_timeout" in html and "Fix:" in html
    report = admin_client.get(f"/settings/messaging/diagnoses/{run_id}/report")
    text = report.get_data(as_text=True)
    assert report.status_code == 200 and "Diagnosis report: MQTT" in text
    assert 'aria-label="Breadcrumb"' in text and 'href="/settings/messaging/mqtt"' in text
    assert 'class="topbar"' in text and "Log out" in text, "the report has the console's navigation"
    started_at = re.search(r"started <time datetime=\"([^\"]+)\">([^<]+)</time>", text)
    assert started_at and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", started_at.group(2))
    assert "T" in started_at.group(1) and "+00:00" not in started_at.group(2)
    download = admin_client.get(f"/settings/messaging/diagnoses/{run_id}/report.json")
    assert "attachment" in download.headers["Content-Disposition"]
    assert json.loads(download.data)["diagnosis"]["cause"] == "handshake_timeout"


def test_presented_certificates_join_the_inventory(app: Flask, admin_client, runner, lab,
                                                   client, admin_token) -> None:
    nats = lab["brokers"]["nats"]
    with app.app_context():
        service.upload_file("nats", "tls_ca", open(lab["certs"]["ca"], "rb").read(), filename="ca.crt")
    point(app, "nats", host="127.0.0.1", port=nats["tls"], tls=True, username=nats["username"],
          password=nats["password"])
    result = runner.invoke(args=["brokers", "diagnose", "nats", "--json", "--timeout", "3"])
    body = json.loads(result.output)
    assert body["ok"] is True, body
    assert body["certificates"] and "localhost" in json.dumps(body["certificates"])
    inventory = client.get("/api/v1/certificates",
                           headers={"Authorization": f"Bearer {admin_token}"}).get_json()["certificates"]
    sources = {c["source"] for c in inventory}
    assert {"tls_ca", "presented"} <= sources
    page = admin_client.get("/certificates").get_data(as_text=True)
    assert "presented" in page and "Messaging Console Test CA" in page
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'source="presented"' in metrics


def test_inventory_keeps_each_address_chain_and_forgets_unconfigured_ones(app: Flask, admin_client,
                                                                          runner, lab) -> None:
    nats = lab["brokers"]["nats"]
    good, expired = f"127.0.0.1:{nats['tls']}", f"127.0.0.1:{nats['tls_expired']}"

    def diagnose() -> dict:
        return json.loads(runner.invoke(args=["brokers", "diagnose", "nats", "--json", "--timeout", "3"]).output)

    def presented() -> dict[str, set[str]]:
        with app.app_context():
            from console import diagnostics
            out: dict[str, set[str]] = {}
            for c in diagnostics.inventory():
                if c["source"] == "presented":
                    out.setdefault(c["where"], set()).add(c["subject"])
            return out

    with app.app_context():
        service.upload_file("nats", "tls_ca", open(lab["certs"]["ca"], "rb").read(), filename="ca.crt")
    point(app, "nats", host="127.0.0.1", port=nats["tls"], tls=True,
          username=nats["username"], password=nats["password"])
    first = diagnose()
    assert first["certificates"], first
    assert set(presented()) == {good}
    # the same address, diagnosed without TLS: it presents nothing now, its chain stays known
    point(app, "nats", tls=False)
    assert diagnose()["certificates"] == []
    assert set(presented()) == {good}
    # another address: its chain is shown, the address no longer configured is forgotten
    point(app, "nats", port=nats["tls_expired"], tls=True)
    assert diagnose()["cause"] == "tls_expired"
    assert set(presented()) == {expired}
    page = admin_client.get("/certificates").get_data(as_text=True)
    assert expired in page and good not in page
    assert re.search(r'href="/settings/messaging/diagnoses/\d+/report">diagnosis \d+</a>', page)


def test_pitfalls_and_uploaded_certificates_link_to_their_field(app: Flask, admin_client, pki) -> None:
    point(app, "kafka", group_id="")
    point(app, "mqtt")                    # a disabled protocol is not linted (issue 18 item 8)
    with app.app_context():
        service.upload_file("mqtt", "tls_ca", pki["soon.crt"].read_bytes(), filename="soon.crt")
    page = admin_client.get("/certificates").get_data(as_text=True)
    assert 'href="/settings/messaging/kafka#kafka-group_id"' in page
    assert 'href="/settings/messaging/mqtt#mqtt-tls_ca"' in page
    assert 'id="kafka-group_id"' in admin_client.get("/settings/messaging/kafka").get_data(as_text=True)
    assert 'id="mqtt-tls_ca"' in admin_client.get("/settings/messaging/mqtt").get_data(as_text=True)


def test_expiring_certificates_in_readyz(app: Flask, client, pki) -> None:
    with app.app_context():
        service.upload_file("mqtt", "tls_ca", pki["soon.crt"].read_bytes(), filename="soon.crt")
        service.upload_file("kafka", "tls_ca", pki["expired.crt"].read_bytes(), filename="old.crt")
    certs = client.get("/readyz").get_json()["certificates"]
    assert {(c["protocol"], c["status"]) for c in certs} == {("mqtt", "expiring"), ("kafka", "expired")}
