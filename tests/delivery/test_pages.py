"""Roll-out on the pages: after a saved change that tells services of a new version, the section,
the priority list and (without JavaScript) the page after the redirect show the roll-out."""
from __future__ import annotations

import re

HX = {"HX-Request": "true"}


def setup(admin_client) -> None:
    assert admin_client.post("/api/v1/services", json={
        "name": "edge", "protocols": ["mqtt", "kafka"]}).status_code == 201
    for protocol in ("mqtt", "kafka"):
        assert admin_client.patch(f"/api/v1/brokers/{protocol}",
                                  json={"enabled": True}).status_code == 200


def test_section_save_shows_the_rollout(admin_client) -> None:
    setup(admin_client)
    html = admin_client.post("/settings/messaging/kafka", data={"session_timeout_ms": "20000"},
                             headers=HX).get_data(as_text=True)
    assert "Roll-out:" in html and "0 of 1 service applied" in html and 'hx-trigger="every' in html


def test_priority_move_shows_the_rollout(admin_client) -> None:
    setup(admin_client)
    html = admin_client.post("/settings/messaging/priorities", data={"move": "mqtt:up"},
                             headers=HX).get_data(as_text=True)
    assert "Priority saved." in html
    assert "Roll-out:" in html and html.count('class="rollout card"') == 1


def test_without_javascript_the_redirect_shows_it(admin_client) -> None:
    setup(admin_client)
    response = admin_client.post("/settings/messaging/kafka", data={"session_timeout_ms": "30000"})
    assert response.status_code == 302 and "rollout=" in response.headers["Location"]
    html = admin_client.get(response.headers["Location"]).get_data(as_text=True)
    assert html.count('class="rollout card"') == 1 and "0 of 1 service applied" in html
    page = admin_client.get("/adapters/rollout").get_data(as_text=True)      # its own page
    assert "Roll-out of configuration v" in page and "Services and adapters" in page


def test_unrelated_change_shows_no_rollout(admin_client) -> None:
    setup(admin_client)
    html = admin_client.post("/settings/messaging/nats", data={"host": "nats.example"},
                             headers=HX).get_data(as_text=True)
    assert "Roll-out:" not in html


def _headline(html: str) -> str:
    """The roll-out card's opening tag and headline."""
    return re.search(r'<div class="rollout card".*?</p>', html, re.S).group(0)


def test_a_service_that_only_polls_is_waited_for_without_a_spinner(app, admin_client) -> None:
    from tests.conftest import make_token

    setup(admin_client)
    html = admin_client.post("/settings/messaging/kafka", data={"session_timeout_ms": "20000"},
                             headers=HX).get_data(as_text=True)
    assert "waiting for edge to fetch (it has never fetched)" in html
    assert 'class="spinner"' not in _headline(html) and 'hx-trigger="every 10s"' in _headline(html)
    service = {"Authorization": f"Bearer {make_token(app, 'edge-svc', 'service', 'edge')}"}
    client = app.test_client()
    fetched = client.get("/api/v1/services/edge/config", headers=service).get_json()["version"]
    shown = admin_client.get("/adapters/rollout", headers=HX).get_data(as_text=True)
    assert "waiting for" not in shown and 'class="spinner"' in _headline(shown)    # fetched: the ack is next
    html = admin_client.post("/settings/messaging/kafka", data={"session_timeout_ms": "25000"},
                             headers=HX).get_data(as_text=True)
    assert re.search(rf"waiting for edge to fetch \(last fetched v{fetched} at "
                     r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)", html)
    assert 'class="spinner"' not in _headline(html)
    api = admin_client.get("/api/v1/rollout").get_json()
    assert api["waiting"] and not api["settled"] and "waiting for edge to fetch" in api["text"]


def test_a_failure_text_is_shown_once(app, admin_client) -> None:
    from tests.conftest import make_token

    setup(admin_client)
    admin_client.post("/settings/messaging/kafka", data={"session_timeout_ms": "20000"}, headers=HX)
    service = {"Authorization": f"Bearer {make_token(app, 'edge-svc', 'service', 'edge')}"}
    client = app.test_client()
    version = client.get("/api/v1/services/edge/config", headers=service).get_json()["version"]
    assert client.post("/api/v1/services/edge/ack", headers=service, json={
        "version": version, "status": "failed", "message": "Not authorized (5)"}).status_code == 200
    for url in ("/adapters/rollout", "/adapters", f"/adapters/rollout?version={version}"):
        html = admin_client.get(url).get_data(as_text=True)
        assert html.count("Not authorized (5)") == 1, url
        assert "edge failed" in html and 'class="spinner"' not in _headline(html)
    fragment = admin_client.get("/adapters/rollout", headers=HX).get_data(as_text=True)
    assert fragment.count("Not authorized (5)") == 1
    assert "edge failed: Not authorized (5)" in admin_client.get("/api/v1/rollout").get_json()["text"]
