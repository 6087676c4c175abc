"""Roll-outs in waves in a real browser: an admin opens "Roll out in waves" on Settings → Messaging,
names the canary, saves, sees the plan before confirming, and the roll-out starts; the canary's
`failed` acknowledgement halts it, the main page says so, and Roll back on the roll-outs page (after
htmx's question) ends it. SCREENSHOTS=1 writes the README's picture (docs/waves.png)."""
from __future__ import annotations

import os
from pathlib import Path

from playwright.sync_api import expect

from tests.browser.axe import describe, violations
from tests.browser.test_settings_browser import log_in
from tests.conftest import make_token

DOCS = Path(__file__).resolve().parents[2] / "docs"
SERVICES = ("canary", "edge-a", "edge-b")


def seed(app) -> dict[str, str]:
    """Three MQTT services on their first document, applied; their tokens."""
    with app.app_context():
        from console.adapters import service as registry
        from console.settings import service

        service.apply_changes("mqtt", {"enabled": True, "host": "127.0.0.1"}, "seed")
        for name in SERVICES:
            registry.register_service(name, ["mqtt"])
    tokens = {name: make_token(app, f"{name}-token", "service", name) for name in SERVICES}
    for name in SERVICES:
        ack(app, tokens, name, "applied")
    return tokens


def ack(app, tokens, name, status, message="") -> None:
    client, auth = app.test_client(), {"Authorization": f"Bearer {tokens[name]}"}
    version = client.get(f"/api/v1/services/{name}/config", headers=auth).get_json()["version"]
    assert client.post(f"/api/v1/services/{name}/ack", headers=auth, json={
        "version": version, "status": status, "message": message}).status_code == 200


def test_plan_confirm_halt_and_roll_back(guarded_page, live_app, tmp_path) -> None:
    tokens = seed(live_app)
    page = guarded_page
    log_in(page)
    page.goto(page.base + "/settings/messaging/mqtt")
    section = page.locator("section#mqtt")
    section.locator("#mqtt-keepalive").fill("45")
    section.get_by_text("Roll out in waves (optional)").click()
    section.get_by_label("canary").check()
    section.get_by_label("Deadline of the wave (s)").fill("600")
    section.get_by_role("button", name="Save MQTT").click()

    confirm = section.locator(".confirm")
    expect(confirm).to_contain_text("This change rolls out in waves")
    expect(confirm).to_contain_text("First wave (1): canary")
    expect(confirm).to_contain_text("Later (2), kept on the version they run until then: edge-a, edge-b")
    expect(confirm).to_contain_text("Deadline 600 s")
    page.screenshot(path=str(tmp_path / "confirm.png"), full_page=True, caret="initial")
    found = {"the plan before confirming": violations(page)}
    section.get_by_role("button", name="Confirm and roll out in waves").click()
    expect(section.locator(".waves-started")).to_contain_text("first wave canary; 2 services keep")
    expect(page.locator("#waves-banner")).to_contain_text("in waves: 0 of 1 service of the first wave")
    assert any(r.startswith("POST /settings/messaging/mqtt") for r in page.htmx_requests)

    ack(live_app, tokens, "canary", "failed", "Connection Refused: not authorised.")
    page.goto(page.base + "/settings/messaging")
    expect(page.locator("#waves-banner")).to_contain_text("halted: canary failed")
    page.screenshot(path=str(tmp_path / "banner.png"), caret="initial")
    page.get_by_role("link", name="Resume it or roll it back on Roll-outs").click()
    rollouts = page.locator("#rollouts")
    expect(rollouts.locator("[data-state=halted]")).to_be_visible()
    expect(rollouts.locator("tr[data-service=canary]")).to_contain_text("Connection Refused: not authorised.")
    expect(rollouts.locator("tr[data-service=edge-a]")).to_contain_text("held on v")
    page.screenshot(path=str(tmp_path / "waves.png"), full_page=True, caret="initial")
    found["a halted roll-out"] = violations(page)
    if os.environ.get("SCREENSHOTS"):
        box = rollouts.bounding_box()
        page.screenshot(path=str(DOCS / "waves.png"), clip={
            "x": box["x"], "y": box["y"], "width": box["width"], "height": min(box["height"], 480)})

    page.once("dialog", lambda dialog: dialog.accept())
    rollouts.get_by_role("button", name="Roll back to v").click()
    expect(page.locator("#rollouts")).to_contain_text("Rolled back: the configuration of v")
    expect(page.locator("#rollouts")).to_contain_text("No roll-out in waves is in progress.")
    assert any(r.startswith("POST /settings/rollouts/") for r in page.htmx_requests)
    bad = {where: v for where, v in found.items() if v}
    assert not bad, "\n".join(f"== {where}\n{describe(v)}" for where, v in bad.items())
