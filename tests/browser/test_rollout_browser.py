"""The roll-out in a real browser: with the example service running as a process against the lab's
Mosquitto, a change saved on the page shows its roll-out updating live until the service applied it;
a wrong password saved anyway ends as failed with the broker's reason. SCREENSHOTS=1 writes the
README's picture (docs/rollout.png) from this page."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

from console.delivery import outbox
from tests.browser.test_settings_browser import log_in
from tests.conftest import make_token
from tests.delivery.test_end_to_end import Service

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture
def delivering(live_app):
    live_app.config.update(DELIVERY_POLL_SECONDS=0.2)
    worker = outbox.start(live_app)
    yield live_app
    worker.stop()


def test_rollout_updates_live_until_the_service_applied(guarded_page, delivering, lab,
                                                        tmp_path) -> None:
    mqtt = lab["brokers"]["mqtt"]
    with delivering.app_context():
        from console.settings import service as settings
        settings.apply_changes("mqtt", {"enabled": True, "host": "127.0.0.1",
                                        "port": mqtt["plain"]}, "seed")
    service = Service(guarded_page.base, make_token(delivering, "edge-token", "service", "edge"))
    try:
        service.wait(lambda s: s["status"] == "applied")
        page = guarded_page
        log_in(page)
        page.goto(page.base + "/settings/messaging/mqtt")
        section = page.locator("section#mqtt")
        section.locator("#mqtt-port").fill(str(mqtt["plain_auth"]))
        section.locator("#mqtt-username").fill(mqtt["username"])
        section.locator("#mqtt-password").fill(mqtt["password"])
        section.get_by_role("button", name="Save MQTT").click()
        rollout = section.locator(".rollout")
        expect(rollout).to_contain_text("1 of 1 service applied", timeout=15000)
        expect(rollout.locator("tr[data-service=edge]")).to_contain_text("applied")
        assert service.status()["broker"] == f"127.0.0.1:{mqtt['plain_auth']}"

        section.locator("#mqtt-password").fill("wrong-password")
        section.get_by_role("button", name="Save MQTT").click()
        expect(section.locator(".guard")).to_contain_text("auth_failed")
        section.locator("#mqtt-password").fill("wrong-password")
        section.get_by_role("button", name="Save anyway").click()
        # the headline names who failed; the service's row says why, once
        expect(section.locator(".rollout")).to_contain_text("edge failed", timeout=15000)
        expect(section.locator(".rollout")).to_contain_text("Not authorized")
        shot = tmp_path / "rollout.png"
        section.screenshot(path=str(shot))
        if os.environ.get("SCREENSHOTS"):
            box = section.bounding_box()
            page.screenshot(path=str(DOCS / "rollout.png"),
                            clip={"x": box["x"], "y": box["y"], "width": box["width"],
                                  "height": min(box["height"], 420)})
        page.goto(page.base + "/adapters")
        expect(page.locator("tr[data-service=edge]")).to_contain_text("failed v")
    finally:
        assert service.stop() == 0
