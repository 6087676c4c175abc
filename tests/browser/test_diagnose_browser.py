"""Diagnose in a real browser: the steps appear while it runs (htmx polling), then the verdict."""
from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.test_settings_browser import log_in


def test_diagnose_shows_live_steps_and_verdict(guarded_page, live_app, lab) -> None:
    with live_app.app_context():
        from console.settings import service

        service.apply_changes("nats", {"enabled": True, "host": "127.0.0.1",
                                       "port": lab["brokers"]["nats"]["plain"]}, "seed")
        service.apply_changes("mqtt", {"enabled": True, "host": "127.0.0.1",
                                       "port": lab["faults"]["refused"]}, "seed")
    page = guarded_page
    log_in(page)
    page.goto(page.base + "/settings/messaging/nats")
    page.locator("section#nats").get_by_role("button", name="Diagnose").click()
    result = page.locator("#nats-diagnosis .diagnosis")
    expect(result).to_be_visible()
    expect(result).to_have_attribute("data-status", "done", timeout=15000)
    expect(result).to_contain_text("Healthy.")
    expect(result.locator("li.step")).to_have_count(6)
    expect(result.locator("li.step-ok")).to_have_count(5)
    assert any(r.startswith("GET /settings/messaging/diagnoses/") for r in page.htmx_requests) or \
        page.htmx_requests.count("POST /settings/messaging/nats/diagnose") == 1

    page.get_by_role("navigation", name="Protocols").get_by_role("link", name="MQTT").click()
    page.locator("section#mqtt").get_by_role("button", name="Diagnose").click()
    broken = page.locator("#mqtt-diagnosis .diagnosis")
    expect(broken).to_have_attribute("data-status", "done", timeout=15000)
    expect(broken).to_contain_text("connection_refused")
    expect(broken).to_contain_text("Fix:")
    expect(broken.locator("li.step-skipped")).to_have_count(4)
