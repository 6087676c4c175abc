"""Every action without JavaScript, in a real browser with scripting off: Diagnose, Test
connection, Check now, Save anyway and Confirm, a priority move with its confirmation, Roll back,
and the users page — each a form that posts and a page with the result."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.conftest import ADMIN_PASSWORD


@pytest.fixture
def nojs(browser, live_server):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    outside: list[str] = []
    page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(live_server)
               else (outside.append(r.request.url), r.abort()))
    page.base = live_server
    page.goto(live_server + "/login")
    page.fill("#username", "admin")
    page.fill("#password", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    expect(page.get_by_role("heading", name="Settings → Messaging")).to_be_visible()
    yield page
    context.close()
    assert outside == []


def seed(app, lab) -> None:
    with app.app_context():
        from console.adapters import service as registry
        from console.settings import service

        service.apply_changes("mqtt", {"enabled": True, "host": "127.0.0.1",
                                       "port": lab["brokers"]["mqtt"]["plain"]}, "seed")
        service.apply_changes("nats", {"enabled": True, "host": "127.0.0.1",
                                       "port": lab["brokers"]["nats"]["plain"]}, "seed")
        service.apply_changes("kafka", {"enabled": True}, "seed")
        service.set_priorities(["mqtt", "kafka", "nats", "pulsar", "rabbitmq"], "seed")
        registry.register_service("edge", ["mqtt", "kafka"])
        registry.create_adapter("temperature", "edge", "seed")


def test_diagnose_test_connection_and_check_now_without_javascript(nojs, live_app, lab) -> None:
    seed(live_app, lab)
    page = nojs
    page.goto(page.base + "/settings/messaging/nats")
    page.locator("section#nats").get_by_role("button", name="Diagnose").click()
    expect(page).to_have_url(re.compile(r"/settings/messaging/diagnoses/\d+$"))
    expect(page.get_by_role("heading", name="Diagnosis of NATS", level=1)).to_be_visible()
    result = page.locator(".diagnosis")
    expect(result).to_have_attribute("data-status", "done", timeout=20000)   # the page reloads itself
    expect(result).to_contain_text("Healthy.")
    expect(result.locator("li.step-ok")).to_have_count(5)

    page.goto(page.base + "/settings/messaging")
    mqtt = page.locator("section#mqtt")
    refused = str(lab["faults"]["refused"])
    mqtt.locator("#mqtt-port").fill(refused)
    mqtt.get_by_role("button", name="Test connection").click()
    expect(page.locator("#mqtt-test")).to_contain_text("Connection failed")
    expect(page.locator("#mqtt-test")).to_contain_text("connection_refused")
    expect(page.locator("#mqtt-port")).to_have_value(refused)      # the typed value stays
    page.goto(page.base + "/settings/messaging")
    expect(page.locator("#mqtt-port")).to_have_value(str(lab["brokers"]["mqtt"]["plain"]))  # unsaved

    page.locator("#mqtt-status").get_by_role("button", name="Check now").click()
    expect(page.locator(".flash")).to_have_text("Checked MQTT: up.")
    expect(page.locator("#mqtt-status")).to_contain_text("● up")


def test_save_anyway_confirm_priority_and_rollback_without_javascript(nojs, live_app, lab) -> None:
    seed(live_app, lab)
    page = nojs
    page.reload()
    refused = str(lab["faults"]["refused"])
    page.locator("#mqtt-port").fill(refused)
    page.locator("section#mqtt").get_by_role("button", name="Save MQTT").click()
    expect(page.locator("#mqtt .guard")).to_contain_text("connection_refused")
    page.locator("#mqtt-port").fill(refused)
    page.get_by_role("button", name="Save anyway").click()
    confirm = page.locator("#mqtt .confirm")
    expect(confirm).to_contain_text("Nothing was saved yet.")
    expect(confirm).to_contain_text("temperature")
    page.get_by_role("button", name="Confirm and save").click()
    expect(page.locator(".flash")).to_have_text("Saved: port.")
    expect(page.locator("#mqtt-port")).to_have_value(refused)

    page.get_by_role("button", name="Move Kafka up").click()
    expect(page.locator("#priorities .confirm")).to_contain_text("New adapters of edge will use kafka")
    page.get_by_role("button", name="Confirm new priority").click()
    expect(page.locator(".flash")).to_have_text("Priority saved.")
    expect(page.locator("#priorities li").first).to_have_attribute("data-protocol", "kafka")
    page.get_by_role("button", name="Move NATS up").click()      # a move that needs no confirmation
    expect(page.locator("#priorities li").nth(1)).to_have_attribute("data-protocol", "nats")
    expect(page.locator("#move-nats-up")).to_be_focused()        # the reloaded page keeps the focus

    page.get_by_role("link", name="History", exact=True).click()
    page.get_by_role("button", name="Roll back to this…").nth(1).click()   # before the priority
    expect(page.get_by_role("heading", name=re.compile(r"Roll back to version \d+"), level=1)).to_be_visible()
    # new adapters go back to MQTT, which temperature is already on: no false alarm
    expect(page.locator("#rollback-preview")).to_contain_text("priorities")
    expect(page.locator("#rollback-preview")).to_contain_text("No adapter is affected.")
    page.get_by_role("button", name="Roll back", exact=True).click()   # nothing to confirm
    expect(page.locator(".flash")).to_contain_text("Rolled back to version")
    page.get_by_role("link", name="Settings → Messaging").click()
    expect(page.locator("#priorities li").first).to_have_attribute("data-protocol", "mqtt")


def test_users_page_without_javascript(nojs) -> None:
    page = nojs
    page.get_by_role("link", name="Users").click()
    page.fill("#new-username", "ops")
    page.fill("#new-password", "short")
    page.get_by_role("button", name="Create user").click()
    expect(page.locator("#new-password-error")).to_have_text("The password needs at least 8 characters.")
    expect(page.locator("#new-username")).to_have_value("ops")
    page.fill("#new-password", "")
    page.get_by_role("button", name="Create user").click()
    expect(page.locator("#users-shown-once")).to_contain_text("shown once")
    ops = page.locator("li.user[data-user=ops]")
    ops.get_by_label("Role").select_option("admin")
    ops.get_by_role("button", name="Change role of ops").click()
    expect(page.locator("#users-message")).to_have_text("ops is now admin.")
    page.locator("li.user[data-user=ops]").get_by_role("button", name="Remove ops").click()
    expect(page.get_by_role("heading", name="Remove user ops?", level=1)).to_be_visible()   # asked first
    page.get_by_role("link", name="Cancel").click()
    expect(page.locator("li.user[data-user=ops]")).to_be_visible()
    page.locator("li.user[data-user=ops]").get_by_role("button", name="Remove ops").click()
    expect(page.get_by_role("button", name="Remove ops")).to_be_focused()
    page.get_by_role("button", name="Remove ops").click()
    expect(page.locator("#users-message")).to_have_text("Removed ops.")
    expect(page.locator("li.user")).to_have_count(1)
