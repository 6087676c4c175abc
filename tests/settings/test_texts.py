"""Texts of the settings page that were wrong (issue 18 item 8): the tabs follow the enabled switch
after a save, the page opens on the first enabled protocol, a switch's change reads on/off (not
Python's True/False), and a connection test says "(Not saved yet.)" only for values not saved."""
from __future__ import annotations

import re

from flask import Flask

from console.settings import service

HX = {"HX-Request": "true"}


def _tab(html: str, protocol: str) -> str:
    return re.search(rf'<li><a href="/settings/messaging/{protocol}"[^>]*>(.*?)</a></li>', html,
                     re.S).group(1)


def test_enabling_updates_the_tab_label_out_of_band(app: Flask, admin_client) -> None:
    page = admin_client.get("/settings/messaging/nats").get_data(as_text=True)
    assert "(off)" in _tab(page, "nats")
    saved = admin_client.post("/settings/messaging/nats", headers=HX,
                              data={"enabled": ["false", "true"], "save_anyway": "1", "confirm": "1"})
    html = saved.get_data(as_text=True)
    assert saved.status_code == 200, html[:2000]
    assert 'id="protocol-tabs" aria-label="Protocols" hx-swap-oob="true"' in html
    assert "(off)" not in _tab(html, "nats") and "(off)" in _tab(html, "kafka")


def test_the_page_opens_on_the_first_enabled_protocol(app: Flask, admin_client) -> None:
    with app.app_context():   # default order kafka › mqtt › nats › pulsar › rabbitmq, only NATS on
        assert service.apply_changes("nats", {"enabled": True}, "test", confirm=True).errors == {}
    html = admin_client.get("/settings/messaging").get_data(as_text=True)
    assert 'id="nats" class="card protocol"' in html and 'id="kafka" class="card protocol"' not in html


def test_a_switch_change_reads_on_and_off(app: Flask, admin_client) -> None:
    with app.app_context():
        result = service.apply_changes("nats", {"enabled": True}, "test", confirm=True)
        assert result.errors == {}
    html = admin_client.get("/settings/messaging/history").get_data(as_text=True)
    assert "off (default) → on" in html
    assert "False" not in html and "True" not in html


def test_not_saved_yet_only_for_values_not_saved(app: Flask, admin_client, lab) -> None:
    port = lab["brokers"]["mqtt"]["plain"]
    with app.app_context():
        result = service.apply_changes("mqtt", {"enabled": True, "host": "127.0.0.1", "port": port},
                                       "test", confirm=True)
        assert result.errors == {}
    form = {"enabled": ["false", "true"], "host": "127.0.0.1", "port": str(port)}
    same = admin_client.post("/settings/messaging/mqtt/test", headers=HX, data=form)
    assert "Connected" in same.get_data(as_text=True)
    assert "(Not saved yet.)" not in same.get_data(as_text=True)
    other = admin_client.post("/settings/messaging/mqtt/test", headers=HX, data={**form, "keepalive": "45"})
    assert "(Not saved yet.)" in other.get_data(as_text=True)


def _api(app: Flask, admin_token: str):
    client = app.test_client()
    headers = {"Authorization": f"Bearer {admin_token}"}
    return client, headers


def test_a_rollback_says_what_it_did_and_labels_its_version(app: Flask, admin_client,
                                                            admin_token) -> None:
    api, auth = _api(app, admin_token)
    assert api.patch("/api/v1/brokers/kafka", json={"port": 9093}, headers=auth).status_code == 200
    start = api.get("/api/v1/versions", headers=auth).get_json()["versions"][0]["id"]
    assert api.patch("/api/v1/brokers/kafka", json={"port": 9094}, headers=auth).status_code == 200
    assert api.patch("/api/v1/brokers/mqtt", json={"keepalive": 45}, headers=auth).status_code == 200
    # without JavaScript: the flash after the redirect, and the new version's label
    done = admin_client.post(f"/settings/messaging/history/{start}/rollback", follow_redirects=True)
    html = done.get_data(as_text=True)
    what = "Kafka port: 9094 → 9093; MQTT keepalive: 45 → 60 (default)"
    assert f'<p class="flash" role="status">Rolled back to version {start}: {what}.' in html
    versions = api.get("/api/v1/versions", headers=auth).get_json()["versions"]
    assert versions[0]["summary"] == f"Rollback to version {start}: {what}"
    assert f"<td data-label=\"Change\">Rollback to version {start}: {what}</td>" in html
    # with JavaScript: the answer says it, and the reloaded page (HX-Refresh) says it again
    latest = versions[1]["id"]
    back = admin_client.post(f"/settings/messaging/history/{latest}/rollback", headers=HX)
    assert back.headers.get("HX-Refresh") == "true"
    again = "Kafka port: 9093 → 9094; MQTT keepalive: 60 (default) → 45"
    assert f"Rolled back to version {latest}: {again}." in back.get_data(as_text=True)
    reloaded = admin_client.get("/settings/messaging/history").get_data(as_text=True)
    assert f"Rolled back to version {latest}: {again}." in reloaded
    # the API: the same words, and the outcome's summary is the version's label
    answer = api.post(f"/api/v1/versions/{start}/rollback", json={}, headers=auth).get_json()
    assert answer["status"] == "applied"
    assert answer["message"] == (f"Rolled back to version {start}: {what}. "
                                 f"This is now version {answer['version']}.")
    assert answer["summary"] == f"Rollback to version {start}: {what}"
    same = api.post(f"/api/v1/versions/{start}/rollback", json={}, headers=auth).get_json()
    assert same["status"] == "unchanged" and same["message"].startswith("Nothing to roll back")


def test_the_audit_log_words_a_switch_change_on_and_off(app: Flask, admin_client) -> None:
    with app.app_context():
        assert service.apply_changes("nats", {"enabled": True}, "test", confirm=True).errors == {}
    html = admin_client.get("/audit").get_data(as_text=True)
    assert "off (default) → on" in html
    assert "False" not in html and "True" not in html and "None" not in html
