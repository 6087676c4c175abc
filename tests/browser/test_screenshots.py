"""The README's pictures, taken from the real pages against the lab: the Settings → Messaging page with
five brokers up, a diagnosis naming a missing topic and its fix, and the confirm step of a priority
change. Each journey asserts what the picture must show; SCREENSHOTS=1 also writes the pictures to
docs/ (otherwise to a temporary directory): `SCREENSHOTS=1 .venv/bin/python -m pytest tests/browser`."""
from __future__ import annotations

import os
from pathlib import Path

from playwright.sync_api import expect

from console import checks
from console.adapters import registry
from console.lab import lab_settings
from console.settings import service
from tests.browser.test_settings_browser import log_in

DOCS = Path(__file__).resolve().parents[2] / "docs"


def picture(locator, name: str, tmp_path: Path, max_height: int | None = None) -> Path:
    """A screenshot of `locator` (cut at `max_height`), in docs/ when SCREENSHOTS is set."""
    target = (DOCS if os.environ.get("SCREENSHOTS") else tmp_path) / name
    box = locator.bounding_box()      # relative to the viewport; the full-page clip is not
    assert box and box["width"] > 300 and box["height"] > 100, box
    scroll = locator.page.evaluate("[window.scrollX, window.scrollY]")
    clip = {"x": box["x"] + scroll[0], "y": box["y"] + scroll[1], "width": box["width"],
            "height": min(box["height"], max_height or box["height"])}
    locator.page.screenshot(path=str(target), clip=clip, full_page=True)
    assert target.stat().st_size > 10_000
    return target


def seed_lab(app) -> None:
    with app.app_context():
        for protocol, values in lab_settings().items():
            result = service.apply_changes(protocol, values, "seed", confirm=True)
            assert result.errors == {}, result.errors
            checks.record(checks.check_settings(service.effective(protocol, reveal=True), 5), "seed")


def test_settings_page_with_five_brokers_up(guarded_page, live_app, lab, tmp_path) -> None:
    seed_lab(live_app)
    page = guarded_page
    page.set_viewport_size({"width": 1280, "height": 1000})
    log_in(page)
    page.goto(page.base + "/settings/messaging/kafka")
    overview = page.locator("#overview")
    expect(overview.locator(".badge.up")).to_have_count(5)
    expect(page.locator("section#kafka")).to_be_visible()
    picture(page.locator("main"), "settings-messaging.png", tmp_path, max_height=1500)


def test_diagnosis_naming_a_missing_topic(guarded_page, live_app, lab, tmp_path) -> None:
    seed_lab(live_app)
    with live_app.app_context():
        service.apply_changes("kafka", {"topic": "orders"}, "seed")
    page = guarded_page
    page.set_viewport_size({"width": 1100, "height": 900})
    log_in(page)
    page.goto(page.base + "/settings/messaging/kafka")
    page.locator("section#kafka").get_by_role("button", name="Diagnose").click()
    result = page.locator("#kafka-diagnosis .diagnosis")
    expect(result).to_have_attribute("data-status", "done", timeout=20000)
    expect(result).to_contain_text("not_found")
    expect(result).to_contain_text("orders")
    picture(result, "diagnose.png", tmp_path)


def test_confirm_step_of_a_priority_change(guarded_page, live_app, tmp_path) -> None:
    with live_app.app_context():
        service.apply_changes("kafka", {"enabled": True}, "seed")
        service.apply_changes("mqtt", {"enabled": True}, "seed")
        registry.register_service("analytics", ["kafka", "mqtt"])
        registry.create_adapter("clickstream", "analytics", "seed")
    page = guarded_page
    page.set_viewport_size({"width": 1100, "height": 900})
    log_in(page)
    page.get_by_role("button", name="Move MQTT up").click()
    confirm = page.locator("#priorities .confirm")
    expect(confirm).to_contain_text("Nothing was saved yet.")
    expect(confirm).to_contain_text("New adapters of analytics will use mqtt instead of kafka.")
    picture(page.locator("#priorities"), "confirm.png", tmp_path)
