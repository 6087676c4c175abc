"""The confirm step in a real browser: a priority change that affects adapters asks first, shows
which adapters and why, and saves only after the confirmation; the audit log and history show it."""
from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.test_settings_browser import log_in


def seed(app) -> None:
    with app.app_context():
        from console.adapters import service as registry
        from console.settings import service

        service.apply_changes("mqtt", {"enabled": True}, "seed")
        service.apply_changes("kafka", {"enabled": True}, "seed")
        service.set_priorities(["mqtt", "kafka", "pulsar", "nats", "rabbitmq"], "seed")
        registry.register_service("edge", ["mqtt", "kafka"])
        registry.create_adapter("temperature", "edge", "seed")
        registry.create_adapter("humidity", "edge", "seed")


def test_priority_change_needs_confirmation(guarded_page, live_app) -> None:
    seed(live_app)
    page = guarded_page
    log_in(page)
    page.get_by_role("button", name="Move Kafka up").click()
    confirm = page.locator("#priorities .confirm")
    expect(confirm).to_contain_text("Nothing was saved yet.")
    expect(confirm).to_contain_text("New adapters of edge will use kafka instead of mqtt.")
    expect(confirm.locator("tr.impact-protocol_changes")).to_have_count(2)
    expect(confirm).to_contain_text("temperature")
    assert page.locator("#priorities ol.priority-list li").first.get_attribute("data-protocol") == "mqtt"

    page.get_by_role("button", name="Confirm new priority").click()
    expect(page.locator("#priorities")).to_contain_text("Priority saved.")
    expect(page.locator("#priorities ol.priority-list li").first).to_have_attribute("data-protocol", "kafka")

    page.get_by_role("link", name="Audit log").click()
    expect(page.locator("#entries")).to_contain_text("confirmation required")
    expect(page.locator("#entries tr.outcome-applied").first).to_contain_text("priorities")
    page.get_by_role("link", name="History").click()
    expect(page.locator("table.versions")).to_contain_text("priorities")
