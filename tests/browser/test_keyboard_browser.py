"""Keyboard use with htmx, in a real browser: after a priority move the focus stays on the moved
item, after each swap (test result, diagnosis, check, save, confirm, rollback preview, users) it
is on the result; axe finds nothing in any of these states."""
from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.axe import assert_accessible
from tests.browser.test_settings_browser import log_in

ACTIVE_ID = "() => document.activeElement && document.activeElement.id"
ACTIVE_TEXT = "() => document.activeElement && document.activeElement.textContent"


SWAPPING = ".htmx-request, .htmx-swapping, .htmx-settling, .htmx-added"


def press(page, locator) -> None:
    """Activate a control from the keyboard: once htmx has settled the last swap (no person presses
    a key within the milliseconds a swap takes), focus it and press Enter."""
    expect(page.locator(SWAPPING)).to_have_count(0)
    locator.focus()
    page.keyboard.press("Enter")


def test_focus_stays_on_the_moved_priority(guarded_page) -> None:
    page = guarded_page
    log_in(page)
    press(page, page.get_by_role("button", name="Move NATS up"))
    expect(page.locator("#priorities")).to_contain_text("Priority saved.")
    expect(page.locator("#priorities li").nth(1)).to_have_attribute("data-protocol", "nats")
    expect(page.locator("#move-nats-up")).to_be_focused()
    page.keyboard.press("Enter")                       # again, from where the focus is
    expect(page.locator("#priorities li").first).to_have_attribute("data-protocol", "nats")
    # at the top its up button is disabled: the focus goes to its down button, still on NATS
    expect(page.locator("#move-nats-down")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#priorities li").nth(1)).to_have_attribute("data-protocol", "nats")
    expect(page.locator("#move-nats-down")).to_be_focused()
    # htmx posts the moves; a key pressed before htmx took over the swapped button posts the plain
    # form, whose reloaded page keeps the focus the same way
    assert page.htmx_requests.count("POST /settings/messaging/priorities") >= 1
    assert_accessible(page, "priorities after moves")


def test_focus_is_on_the_result_after_each_swap(guarded_page, live_app, lab) -> None:
    with live_app.app_context():
        from console.adapters import service as registry
        from console.settings import service

        service.apply_changes("mqtt", {"enabled": True, "host": "127.0.0.1",
                                       "port": lab["brokers"]["mqtt"]["plain"]}, "seed")
        service.apply_changes("kafka", {"enabled": True}, "seed")
        service.set_priorities(["mqtt", "kafka", "nats", "pulsar", "rabbitmq"], "seed")
        registry.register_service("edge", ["mqtt", "kafka"])
        registry.create_adapter("temperature", "edge", "seed")
    page = guarded_page
    log_in(page)
    mqtt = page.locator("section#mqtt")

    press(page, mqtt.get_by_role("button", name="Test connection"))
    result = page.locator("#mqtt-test p")
    expect(result).to_contain_text("Connected")
    expect(result).to_be_focused()
    assert "POST /settings/messaging/mqtt/test" in page.htmx_requests
    assert "POST /settings/messaging/mqtt" not in page.htmx_requests     # tested, not saved

    press(page, mqtt.get_by_role("button", name="Diagnose"))
    diagnosis = page.locator("#mqtt-diagnosis .diagnosis")
    expect(diagnosis).to_have_attribute("data-status", "done", timeout=15000)
    expect(diagnosis).to_be_focused()                  # and it stays so while it polls itself
    assert_accessible(page, "a diagnosis and a test result in place")

    press(page, page.locator("#mqtt-status").get_by_role("button", name="Check now"))
    expect(page.locator("#mqtt-status")).to_be_focused()
    expect(page.locator("#mqtt-status")).to_contain_text("● up")

    page.fill("#mqtt-port", str(lab["faults"]["refused"]))
    press(page, mqtt.get_by_role("button", name="Save MQTT"))
    guard = page.locator("#mqtt .guard")
    expect(guard).to_be_focused()
    page.fill("#mqtt-port", str(lab["faults"]["refused"]))
    press(page, page.get_by_role("button", name="Save anyway"))
    confirm = page.locator("#mqtt .confirm")
    expect(confirm).to_be_focused()
    assert_accessible(page, "the confirm step")
    press(page, page.get_by_role("button", name="Confirm and save"))
    saved = page.locator("#mqtt p.ok[role=status]")
    expect(saved).to_have_text("Saved: port.")
    expect(saved).to_be_focused()

    page.goto(page.base + "/settings/messaging/kafka")
    page.fill("#kafka-port", "70000")
    press(page, page.locator("section#kafka").get_by_role("button", name="Save Kafka"))
    expect(page.locator("#kafka-port-error")).to_be_visible()
    expect(page.locator("section#kafka p.error[role=alert]").first).to_be_focused()
    assert_accessible(page, "a field error")

    press(page, page.get_by_role("button", name="Move Kafka up"))
    expect(page.locator("#priority-confirm")).to_be_focused()
    press(page, page.get_by_role("button", name="Confirm new priority"))
    expect(page.locator("#move-kafka-down")).to_be_focused()

    page.get_by_role("link", name="History", exact=True).click()
    press(page, page.get_by_role("button", name="Roll back to this…").first)
    expect(page.locator("#rollback-title")).to_be_focused()
    assert_accessible(page, "the rollback preview")


def test_users_page_with_the_keyboard(guarded_page) -> None:
    page = guarded_page
    log_in(page)
    page.on("dialog", lambda d: d.accept())
    page.get_by_role("link", name="Users").click()
    page.fill("#new-username", "ops")
    press(page, page.get_by_role("button", name="Create user"))
    once = page.locator("#users-shown-once")
    expect(once).to_be_focused()
    assert "POST /users" in page.htmx_requests
    assert_accessible(page, "a password shown once")
    press(page, page.locator("li.user[data-user=admin]").get_by_role("button", name="Remove admin"))
    errors = page.locator("li.user[data-user=admin] [id$=-errors]")
    expect(errors).to_contain_text("last admin")
    expect(errors).to_be_focused()
    assert_accessible(page, "a refused removal")
    page.fill("li.user[data-user=ops] input[type=password]", "short")
    press(page, page.get_by_role("button", name="Set password of ops"))
    expect(page.locator("li.user[data-user=ops] [id$=-errors]")).to_contain_text("at least 8")
    press(page, page.get_by_role("button", name="Remove ops"))
    expect(page.locator("#users-message")).to_be_focused()
    expect(page.locator("li.user")).to_have_count(1)


def test_tokens_and_adapters_with_the_keyboard(guarded_page) -> None:
    page = guarded_page
    log_in(page)
    page.on("dialog", lambda d: d.accept())
    page.get_by_role("link", name="API tokens").click()
    page.get_by_label("Name").fill("deploy")
    press(page, page.get_by_role("button", name="Create token"))
    expect(page.locator("#tokens .card.warn")).to_be_focused()
    expect(page.locator("#tokens .secret-once")).to_be_visible()
    press(page, page.locator("tr[data-token=deploy]").get_by_role("button", name="Revoke"))
    expect(page.locator("#tokens p.ok")).to_have_text("Revoked deploy.")
    expect(page.locator("#tokens p.ok")).to_be_focused()

    page.get_by_role("link", name="Services & adapters").first.click()
    form = page.locator("form", has=page.get_by_role("button", name="Register service"))
    form.get_by_label("Service").fill("edge")
    form.get_by_label("MQTT").check()
    press(page, page.get_by_role("button", name="Register service"))
    expect(page.locator("#registry p.ok[role=status]")).to_be_focused()
    for _ in range(2):                                 # the second one exists already
        page.locator("form", has=page.get_by_role("button", name="Create adapter")) \
            .get_by_label("Adapter").fill("temperature")
        press(page, page.get_by_role("button", name="Create adapter"))
        expect(page.locator("#registry [autofocus]")).to_be_focused()
    expect(page.locator("#registry p.error[role=alert]").first).to_be_focused()
    assert_accessible(page, "an adapter error")
    assert page.htmx_requests.count("POST /adapters/new") == 2
