"""The Settings → Messaging page in a real browser: log in, reorder priorities, fix a field error."""
from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.conftest import ADMIN_PASSWORD


def log_in(page) -> None:
    page.goto(page.base + "/settings/messaging")
    expect(page).to_have_url(re.compile(r"/login"))
    page.fill("#username", "admin")
    page.fill("#password", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    expect(page.get_by_role("heading", name="Settings → Messaging")).to_be_visible()


def test_login_reorder_and_fix_a_field_error(guarded_page) -> None:
    page = guarded_page
    log_in(page)
    items = page.locator("#priorities li")
    expect(items).to_have_count(5)
    assert items.evaluate_all("els => els.map(e => e.dataset.protocol)") == [
        "kafka", "mqtt", "nats", "pulsar", "rabbitmq"]

    page.get_by_role("button", name="Move NATS up").click()
    expect(page.locator("#priorities")).to_contain_text("Priority saved.")
    assert page.locator("#priorities li").evaluate_all(
        "els => els.map(e => e.dataset.protocol)") == ["kafka", "nats", "mqtt", "pulsar", "rabbitmq"]
    page.get_by_role("button", name="Move NATS up").click()
    expect(page.locator("#priorities li").first).to_have_attribute("data-protocol", "nats")

    kafka = page.locator("section#kafka")
    kafka.locator("#kafka-port").fill("70000")
    kafka.get_by_role("button", name="Save Kafka").click()
    error = page.locator("#kafka-port-error")
    expect(error).to_have_text("70000 is outside 1–65535.")
    expect(page.locator("section#kafka")).to_contain_text("Nothing was saved")

    page.locator("#kafka-port").fill("9093")
    page.locator("section#kafka").get_by_role("button", name="Save Kafka").click()
    expect(page.locator("section#kafka")).to_contain_text("Saved: port.")
    expect(page.locator("#kafka-port-error")).to_have_count(0)

    assert "POST /settings/messaging/priorities" in page.htmx_requests
    assert page.htmx_requests.count("POST /settings/messaging/kafka") == 2

    page.reload()    # the page opens on the first protocol in priority order: NATS now
    expect(page.locator("section.protocol")).to_have_count(1)
    expect(page.locator("section#nats")).to_be_visible()
    page.locator("#overview").get_by_role("link", name="Kafka").click()
    expect(page).to_have_url(re.compile(r"/settings/messaging/kafka$"))
    expect(page.locator("#kafka-port")).to_have_value("9093")
    expect(page.locator('section#kafka [data-field="port"] .src-saved')).to_be_visible()
    assert page.locator("#priorities li").first.get_attribute("data-protocol") == "nats"


def test_one_protocol_at_a_time_with_unsaved_and_overridden_fields(guarded_page) -> None:
    page = guarded_page
    log_in(page)
    tabs = page.get_by_role("navigation", name="Protocols")
    tabs.get_by_role("link", name="Pulsar").click()
    expect(page).to_have_url(re.compile(r"/settings/messaging/pulsar$"))
    expect(page.locator("section.protocol")).to_have_count(1)
    expect(tabs.locator('a[aria-current="page"]')).to_have_text("Pulsar (off)")
    marker = page.locator("section#pulsar .unsaved-marker")
    expect(marker).to_be_hidden()
    page.fill("#pulsar-url", "pulsar://127.0.0.1:6650,127.0.0.2:6650")
    expect(marker).to_be_visible()
    page.get_by_role("button", name="Save Pulsar").click()
    expect(page.locator("section#pulsar")).to_contain_text("Saved: url.")
    expect(page.locator("section#pulsar .unsaved-marker")).to_be_hidden()
    host = page.locator('section#pulsar [data-field="host"]')
    expect(host).to_have_class(re.compile(r"overridden"))
    expect(host).to_contain_text("Not used while")
    reasons = page.locator("section#pulsar fieldset").first.locator("details.reasons")
    expect(reasons.locator("li").first).to_be_hidden()
    reasons.locator("summary").click()
    expect(reasons.locator("li").first).to_be_visible()
