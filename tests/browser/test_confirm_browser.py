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


def test_a_client_certificate_upload_survives_its_confirmation(guarded_page, live_app, tmp_path) -> None:
    """Issue 18 item 1 (uploads): the PKCS#12 and its password are kept on the server while the
    confirmation asks; Confirm upload applies them without choosing the file again."""
    import pki

    from tests import test_certs as certs_helpers

    seed(live_app)
    ca = pki.make_ca()
    leaf = pki.issue(ca, "console-client", client=True)
    keystore = tmp_path / "client.p12"
    keystore.write_bytes(certs_helpers.make_p12(leaf, [ca], "p12-typed-Pa55"))
    page = guarded_page
    log_in(page)
    page.goto(page.base + "/settings/messaging/mqtt")
    slot = page.locator("#mqtt-tls_cert form.upload").first      # not the staging form
    slot.locator('input[name="file"]').set_input_files(str(keystore))
    slot.locator('input[name="password"]').fill("p12-typed-Pa55")
    slot.get_by_role("button", name="Upload").click()
    card = page.locator("#mqtt .files .confirm")
    expect(card).to_contain_text("client.p12 and the keystore password you typed: kept on the server")
    assert "p12-typed-Pa55" not in page.content()
    card.get_by_role("button", name="Confirm upload").click()
    expect(page.locator("#mqtt")).to_contain_text("Uploaded client.p12.")
    expect(page.locator("#mqtt-tls_cert")).to_contain_text("key set")
