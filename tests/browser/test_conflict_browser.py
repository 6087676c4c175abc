"""Two admins on one protocol, in a real browser (htmx): the other's change made meanwhile is kept when
the operator changed other fields, and a field both changed is refused with the operator's input kept;
saving again replaces it."""
from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.test_settings_browser import log_in
from tests.conftest import make_token


def test_a_change_made_meanwhile_is_kept_or_named(guarded_page, live_app) -> None:
    page = guarded_page
    log_in(page)
    page.goto(page.base + "/settings/messaging/mqtt")
    other = live_app.test_client()
    auth = {"Authorization": f"Bearer {make_token(live_app, 'bob', 'admin')}"}
    assert other.patch("/api/v1/brokers/mqtt", json={"host": "other.example"},
                       headers=auth).status_code == 200

    mqtt = page.locator("section#mqtt")
    mqtt.locator("#mqtt-port").fill("1884")
    mqtt.get_by_role("button", name="Save MQTT").click()
    expect(page.locator("section#mqtt")).to_contain_text("Saved: port. Kept what was changed by "
                                                         "someone else since you opened it")
    expect(page.locator("#mqtt-host")).to_have_value("other.example")

    assert other.patch("/api/v1/brokers/mqtt", json={"host": "third.example"},
                       headers=auth).status_code == 200
    page.locator("#mqtt-host").fill("mine.example")
    page.locator("section#mqtt").get_by_role("button", name="Save MQTT").click()
    conflict = page.locator("section#mqtt .conflict")
    expect(conflict).to_contain_text("MQTT was changed by someone else since you opened it")
    expect(conflict.locator('tr[data-field="host"] td')).to_have_text(
        ["host", "other.example", "mine.example", "third.example"])
    expect(page.locator("#mqtt-host")).to_have_value("mine.example")
    expect(page.locator("#mqtt-port")).to_have_value("1884")

    page.locator("section#mqtt").get_by_role("button", name="Save MQTT").click()
    expect(page.locator("section#mqtt")).to_contain_text("Saved: host.")
    assert other.get("/api/v1/brokers/mqtt", headers=auth).get_json()["settings"]["host"]["value"] \
        == "mine.example"
