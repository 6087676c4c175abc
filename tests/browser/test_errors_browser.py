"""Error answers in a real browser (issue 18 items 2 and 3): a page whose session ended elsewhere goes
to the log-in page as a whole and comes back after signing in; an upload over the size limit, an
expired form and a lost connection each say so in the page, the expired form keeping what was typed.
Screenshots go to $SHOTS (a temporary directory otherwise)."""
from __future__ import annotations

import os
import re
from pathlib import Path

from playwright.sync_api import expect

from tests.browser.test_settings_browser import log_in
from tests.conftest import ADMIN_PASSWORD

EXPECTED = re.compile(r"status of (400|401|413)|Response Status Error Code (400|401|413)|"
                      r"ERR_CONNECTION_RESET|htmx:(sendError|afterRequest)")


def shot(page, name: str, tmp_path: Path) -> None:
    page.screenshot(path=str(Path(os.environ.get("SHOTS") or tmp_path) / name),
                    caret="initial")   # hiding the caret injects a style the CSP refuses


def _expected_errors_only(page) -> None:
    """The browser logs each error status it was given; these tests cause them on purpose."""
    page.problems[:] = [p for p in page.problems if not EXPECTED.search(p)]


def test_a_session_ended_in_another_tab_takes_the_whole_tab_to_log_in(guarded_page, tmp_path) -> None:
    page = guarded_page
    log_in(page)
    page.goto(page.base + "/settings/messaging/mqtt")
    other = page.context.new_page()
    other.goto(page.base + "/settings/messaging")
    other.get_by_role("button", name="Log out").first.click()
    expect(other.get_by_role("heading", name="Log in")).to_be_visible()
    other.close()

    page.locator("#mqtt-host").fill("typed.example")
    page.locator("section#mqtt").get_by_role("button", name="Save MQTT").click()
    expect(page).to_have_url(re.compile(r"/login\?next=(%2F|/)settings(%2F|/)messaging(%2F|/)mqtt$"))
    expect(page.locator("header.topbar")).to_have_count(1)
    expect(page.locator("h1")).to_have_count(1)
    expect(page.locator("main")).to_contain_text("Your session has ended")
    shot(page, "session-ended.png", tmp_path)
    assert "POST /settings/messaging/mqtt" in page.htmx_requests

    page.fill("#username", "admin")
    page.fill("#password", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/settings/messaging/mqtt$"))
    expect(page.locator("#mqtt-host")).not_to_have_value("typed.example")     # nothing was saved
    _expected_errors_only(page)


def test_an_upload_over_the_limit_says_the_limit(guarded_page, tmp_path) -> None:
    page = guarded_page
    log_in(page)
    page.goto(page.base + "/settings/messaging/rabbitmq")
    big = tmp_path / "truststore.pem"
    big.write_bytes(b"x" * 3 * 1024 * 1024)
    slot = page.locator("#rabbitmq-tls_ca")
    slot.locator('input[name="file"]').set_input_files(str(big))
    slot.get_by_role("button", name="Upload").click()
    messages = page.locator("#messages")
    expect(messages).to_contain_text("at most 2 MiB per request (CONSOLE_MAX_CONTENT_LENGTH)")
    expect(messages).to_contain_text("Nothing was saved.")
    shot(page, "upload-too-large.png", tmp_path)
    assert "POST /settings/messaging/rabbitmq/files/tls_ca" in page.htmx_requests
    _expected_errors_only(page)


def test_an_expired_form_keeps_what_was_typed(guarded_page, tmp_path) -> None:
    page = guarded_page
    log_in(page)
    page.goto(page.base + "/settings/messaging/mqtt")
    form = page.locator("section#mqtt form[data-track-unsaved]")
    form.locator('input[name="csrf_token"]').evaluate("el => el.value = 'expired-token'")
    page.locator("#mqtt-host").fill("typed.example")
    page.locator("#mqtt-password").fill("typed-secret")
    page.locator("section#mqtt").get_by_role("button", name="Save MQTT").click()
    section = page.locator("section#mqtt")
    expect(section.locator(".expired")).to_contain_text("Nothing was saved: the form had expired")
    expect(section.locator(".expired")).to_contain_text("except Password: type it again")
    expect(page.locator("#mqtt-host")).to_have_value("typed.example")
    expect(page.locator("#mqtt-password")).to_have_value("")
    expect(page.locator("header.topbar")).to_have_count(1)
    shot(page, "expired-form.png", tmp_path)

    page.locator("section#mqtt").get_by_role("button", name="Save MQTT").click()   # a fresh token now
    expect(page.locator("section#mqtt")).to_contain_text("Saved: host.")
    _expected_errors_only(page)


def test_a_lost_connection_says_so(guarded_page, tmp_path) -> None:
    page = guarded_page
    log_in(page)
    page.goto(page.base + "/settings/messaging/mqtt")
    page.route("**/settings/messaging/mqtt", lambda r: r.abort("connectionreset")
               if r.request.method == "POST" else r.continue_())
    page.locator("#mqtt-port").fill("1884")
    page.locator("section#mqtt").get_by_role("button", name="Save MQTT").click()
    expect(page.locator("#messages")).to_contain_text("No answer from the console")
    expect(page.locator("#mqtt-port")).to_have_value("1884")
    shot(page, "connection-lost.png", tmp_path)
    _expected_errors_only(page)
