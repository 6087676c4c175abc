"""Every page for everyone, in a real browser: axe-core finds no violation on any page (and on the
states that actions leave behind), no page scrolls sideways at 390 px, where the navigation
collapses into a menu that opens without JavaScript; the login form autofocuses; a favicon."""
from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from console.brokers import PROTOCOLS
from tests.browser.axe import assert_accessible, describe, violations
from tests.browser.test_settings_browser import log_in
from tests.conftest import ADMIN_PASSWORD, VIEWER_PASSWORD, add_user, make_token

NARROW = {"width": 390, "height": 844}
SCROLL_WIDTH = "() => document.documentElement.scrollWidth"


def seed(app, lab) -> dict:
    """Data on every page: enabled protocols, an uploaded truststore, adapters, versions, audit
    entries, a token, a viewer, and a finished diagnosis."""
    with app.app_context():
        from console import diagnostics
        from console.adapters import service as registry
        from console.settings import service

        mqtt = lab["brokers"]["mqtt"]
        service.apply_changes("mqtt", {"enabled": True, "host": "127.0.0.1",
                                       "port": mqtt["plain"]}, "seed")
        service.apply_changes("kafka", {"enabled": True, "host": "127.0.0.1",
                                        "port": lab["faults"]["refused"]}, "seed")
        with open(lab["certs"]["ca"], "rb") as ca:
            service.upload_file("mqtt", "tls_ca", ca.read(), filename="ca.crt")
        registry.register_service("edge", ["mqtt", "kafka"])
        registry.create_adapter("temperature", "edge", "seed")
        run_id = diagnostics.start("mqtt", 3, actor="seed")
    deadline = time.monotonic() + 20
    while True:
        with app.app_context():
            from console import diagnostics
            if diagnostics.get(run_id).status != "running":
                break
        assert time.monotonic() < deadline, "the seeded diagnosis did not finish"
        time.sleep(0.1)
    add_user(app, "viewer", "viewer", VIEWER_PASSWORD)
    make_token(app, "ci-reader", "viewer")
    return {"run_id": run_id}


def admin_pages(seeded: dict) -> list[str]:
    run = seeded["run_id"]
    return ["/settings/messaging", *(f"/settings/messaging/{p}" for p in PROTOCOLS), "/adapters", "/adapters/rollout",
            "/settings/messaging/history", "/settings/rollouts",
            "/audit", "/certificates", f"/settings/messaging/diagnoses/{run}/report",
            f"/settings/messaging/diagnoses/{run}", "/tokens", "/users", "/no-such-page"]


def log_in_as(page, name: str, password: str) -> None:
    page.goto(page.base + "/login")
    page.fill("#username", name)
    page.fill("#password", password)
    page.click("button[type=submit]")
    expect(page.get_by_role("heading", name="Settings → Messaging")).to_be_visible()


@pytest.fixture
def seeded(live_app, lab) -> dict:
    return seed(live_app, lab)


def test_axe_finds_nothing_on_any_page(guarded_page, seeded) -> None:
    page = guarded_page
    found: dict[str, list] = {}
    page.goto(page.base + "/login")
    found["/login"] = violations(page)
    page.fill("#username", "admin")
    page.fill("#password", "wrong-password")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_be_visible()
    found["/login (wrong password)"] = violations(page)
    log_in(page)
    for path in admin_pages(seeded):
        page.goto(page.base + path)
        found[path] = violations(page)
    page.goto(page.base + "/tokens")
    page.get_by_label("Name").fill("deploy")
    page.get_by_role("button", name="Create token").click()
    expect(page.locator(".secret-once")).to_be_visible()
    found["/tokens (a token shown once)"] = violations(page)
    page.locator("tr[data-token=deploy] form").evaluate("form => form.submit()")   # as without JavaScript
    expect(page.get_by_role("heading", name="Revoke token deploy?", level=1)).to_be_visible()
    found["the question before a revoke without JavaScript"] = violations(page)
    page.get_by_role("button", name="Log out").first.click()
    log_in_as(page, "viewer", VIEWER_PASSWORD)
    for path in ("/settings/messaging", "/audit", "/tokens"):
        page.goto(page.base + path)
        found[f"{path} (viewer)"] = violations(page)
    # the wrong password (401), the error page (404) and the viewer's 403 are meant
    page.problems[:] = [p for p in page.problems if not re.search(r"status of (401|403|404)", p)]
    bad = {where: v for where, v in found.items() if v}
    assert not bad, "\n".join(f"== {where}\n{describe(v)}" for where, v in bad.items())


def test_axe_finds_nothing_with_environment_overrides(guarded_page, seeded, monkeypatch) -> None:
    """Locked fields, a shadowed saved value, a conflicting alias and the priority moved by the
    environment."""
    monkeypatch.setenv("SP_MQTT_PORT", "1883")
    monkeypatch.setenv("SP_KAFKA_HOST", "127.0.0.1")
    monkeypatch.setenv("KAFKA_BROKERS", "127.0.0.2:9092")
    monkeypatch.setenv("SP_PRIORITIZED_PROTOCOL", "nats")
    page = guarded_page
    log_in(page)
    expect(page.locator("#priorities")).to_contain_text("SP_PRIORITIZED_PROTOCOL=nats")
    # NATS leads the order but is off: the page opens the first enabled protocol
    expect(page.locator("section#kafka")).to_be_visible()
    assert_accessible(page, "Settings → Messaging with environment overrides")
    page.goto(page.base + "/settings/messaging/mqtt")
    expect(page.locator("#mqtt-port")).to_be_disabled()
    assert_accessible(page, "MQTT with its port from the environment")
    page.goto(page.base + "/settings/messaging/kafka")
    expect(page.locator("#kafka-host")).to_be_disabled()
    assert_accessible(page, "Kafka with a conflicting alias")


def test_no_page_scrolls_sideways_at_390px(browser, live_server, live_app, seeded) -> None:
    context = browser.new_context(viewport=NARROW)
    page = context.new_page()
    page.base = live_server
    wide: dict[str, int] = {}
    page.goto(page.base + "/login")
    found_login = violations(page)
    wide["/login"] = page.evaluate(SCROLL_WIDTH)
    page.fill("#username", "admin")
    page.fill("#password", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    expect(page.get_by_role("heading", name="Settings → Messaging")).to_be_visible()
    found: dict[str, list] = {"/login": found_login}
    for path in admin_pages(seeded):
        page.goto(page.base + path)
        wide[path] = page.evaluate(SCROLL_WIDTH)
        found[path] = violations(page)               # the narrow layout is checked by axe too
    page.goto(page.base + "/settings/messaging")
    page.get_by_text("Menu").click()
    found["the open menu"] = violations(page)
    wide["the open menu"] = page.evaluate(SCROLL_WIDTH)
    # states that actions leave behind: a field error, a test result, a diagnosis, the guard
    page.goto(page.base + "/settings/messaging/kafka")
    page.fill("#kafka-port", "70000")
    page.locator("section#kafka").get_by_role("button", name="Save Kafka").click()
    expect(page.locator("#kafka-port-error")).to_be_visible()
    wide["kafka with a field error"] = page.evaluate(SCROLL_WIDTH)
    found["kafka with a field error"] = violations(page)
    page.goto(page.base + "/settings/messaging/mqtt")
    page.locator("section#mqtt").get_by_role("button", name="Test connection").click()
    expect(page.locator("#mqtt-test p")).to_contain_text("Connected")
    page.locator("section#mqtt").get_by_role("button", name="Diagnose").click()
    expect(page.locator("#mqtt-diagnosis .diagnosis")).to_have_attribute("data-status", "done",
                                                                        timeout=15000)
    page.fill("#mqtt-host", "127.0.0.9")
    page.locator("section#mqtt").get_by_role("button", name="Save MQTT").click()
    expect(page.locator("#mqtt .guard")).to_be_visible()
    wide["messaging after actions"] = page.evaluate(SCROLL_WIDTH)
    found["messaging after actions"] = violations(page)
    context.close()
    assert {p: w for p, w in wide.items() if w > NARROW["width"]} == {}
    bad = {where: v for where, v in found.items() if v}
    assert not bad, "\n".join(f"== {where}\n{describe(v)}" for where, v in bad.items())


def test_navigation_collapses_into_a_menu_without_javascript(browser, live_server) -> None:
    context = browser.new_context(viewport=NARROW, java_script_enabled=False)
    page = context.new_page()
    page.goto(live_server + "/login")
    page.fill("#username", "admin")
    page.fill("#password", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    expect(page.get_by_role("heading", name="Settings → Messaging")).to_be_visible()
    audit = page.get_by_role("link", name="Audit log")
    expect(audit).to_have_count(0)            # folded away: only the menu button shows
    page.get_by_text("Menu").click()
    expect(audit).to_be_visible()
    audit.click()
    expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    assert page.evaluate(SCROLL_WIDTH) <= NARROW["width"]
    context.close()


def test_login_autofocuses_and_there_is_a_favicon(guarded_page) -> None:
    page = guarded_page
    page.goto(page.base + "/login")
    assert page.evaluate("() => document.activeElement.id") == "username"
    icon = page.locator("link[rel=icon]").get_attribute("href")
    response = page.request.get(page.base + icon)
    assert response.status == 200 and response.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in response.body()
    assert_accessible(page)
