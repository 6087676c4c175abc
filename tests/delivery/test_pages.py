"""Roll-out on the pages: after a saved change that tells services of a new version, the section,
the priority list and (without JavaScript) the page after the redirect show the roll-out."""
from __future__ import annotations

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
    assert "Roll-out:" in html and "0 of 1 service applied" in html and 'hx-trigger="every 1s"' in html


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
