"""Status never lies, in a real browser: after "Save anyway" with a wrong port the badge and the
overview show the failed check of the new settings, never the old "● up"; htmx swaps leave every
element id unique; the rollback preview replaces itself."""
from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser.test_settings_browser import log_in

DUPLICATE_IDS = """() => {
  const seen = {}, twice = [];
  for (const el of document.querySelectorAll('[id]')) {
    if (seen[el.id]) twice.push(el.id); seen[el.id] = true;
  }
  return twice;
}"""


def test_save_anyway_shows_the_new_result_in_badge_and_overview(guarded_page, live_app, lab) -> None:
    with live_app.app_context():
        from console import checks
        from console.settings import service

        service.apply_changes("mqtt", {"enabled": True, "host": "127.0.0.1",
                                       "port": lab["brokers"]["mqtt"]["plain"]}, "seed")
        checks.record(checks.check_settings(service.effective("mqtt", reveal=True), 3), "seed")
    page = guarded_page
    log_in(page)
    page.goto(page.base + "/settings/messaging/mqtt")
    overview = page.locator("#overview tr", has=page.locator('a[href="/settings/messaging/mqtt"]'))
    expect(overview).to_contain_text("● up")
    expect(page.locator("#mqtt-status")).to_contain_text("● up")

    page.fill("#mqtt-port", str(lab["faults"]["refused"]))
    page.get_by_role("button", name="Save MQTT").click()
    guard = page.locator("#mqtt .guard")
    expect(guard).to_contain_text("connection_refused")
    expect(page.locator("#mqtt-status")).to_contain_text("● up")  # nothing was saved yet
    expect(page.locator("#mqtt-port")).to_have_value(str(lab["faults"]["refused"]))
    page.get_by_role("button", name="Save anyway").click()

    expect(page.locator("#mqtt")).to_contain_text("Saved: port.")
    expect(page.locator("#mqtt-status")).to_contain_text("● down")
    expect(page.locator("#mqtt-status")).not_to_contain_text("● up")
    expect(overview).to_contain_text("● down")
    expect(overview).to_contain_text("connection_refused")
    expect(overview).not_to_contain_text("● up")
    assert page.evaluate(DUPLICATE_IDS) == []


def test_rollback_previews_replace_each_other(guarded_page, live_app) -> None:
    with live_app.app_context():
        from console.settings import service

        for host in ("mqtt-a", "mqtt-b", "mqtt-c"):
            service.apply_changes("mqtt", {"host": host}, "seed")
    page = guarded_page
    log_in(page)
    page.get_by_role("link", name="History", exact=True).click()
    buttons = page.get_by_role("button", name="Roll back to this…")
    buttons.nth(0).click()
    expect(page.locator("#rollback-preview")).to_contain_text("Roll back to version")
    buttons.nth(1).click()
    expect(page.locator("#rollback-preview h2")).to_have_count(1)
    assert page.evaluate(DUPLICATE_IDS) == []
    diff = page.locator("#diff")
    expect(diff).to_contain_text("mqtt-b")
    expect(diff).not_to_contain_text("(none)")
    # the rollback says what it did after the page reloads, and the new version says the same
    page.locator("#rollback-preview").get_by_role("button", name="Roll back").click()
    flash = page.locator(".flash")
    expect(flash).to_contain_text(re.compile(r"Rolled back to version \d+: MQTT host: mqtt-c → mqtt-a\."))
    newest = page.locator("table.versions tbody tr").first
    expect(newest).to_contain_text(re.compile(r"Rollback to version \d+: MQTT host: mqtt-c → mqtt-a"))
