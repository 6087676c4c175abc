"""Roll-outs in waves on the pages: a change given a plan on Settings → Messaging (with and without
htmx) asks first and shows the plan; the roll-outs page lists the roll-out with its wave and each
service's state, and offers admins Resume and Roll back (confirmed, audited); viewers see the state
only; a halted roll-out shows on Settings → Messaging too."""
from __future__ import annotations

import datetime as dt
import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from console.delivery import waves
from console.extensions import db
from console.models import AuditEntry, Rollout, utcnow
from tests.conftest import make_token

HX = {"HX-Request": "true"}
SERVICES = ("canary", "edge-a", "edge-b")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def fleet(app: Flask, admin_client: FlaskClient) -> dict[str, str]:
    """Three MQTT services, each on its first document (applied), with its own token."""
    assert admin_client.patch("/api/v1/brokers/mqtt", json={
        "enabled": True, "host": "127.0.0.1"}).status_code == 200
    tokens = {}
    for name in SERVICES:
        assert admin_client.post("/api/v1/services", json={
            "name": name, "protocols": ["mqtt"]}).status_code == 201
        tokens[name] = make_token(app, f"{name}-token", "service", name)
        ack(admin_client, tokens, name, "applied")
    return tokens


def ack(client: FlaskClient, tokens: dict[str, str], name: str, status: str,
        message: str = "", **extra) -> int:
    doc = client.get(f"/api/v1/services/{name}/config", headers=bearer(tokens[name])).get_json()
    response = client.post(f"/api/v1/services/{name}/ack", headers=bearer(tokens[name]),
                           json={"version": doc["version"], "status": status, "message": message,
                                 **extra})
    assert response.status_code == 200, response.get_json()
    return doc["version"]


def keepalive(client: FlaskClient) -> int:
    return client.get("/api/v1/brokers/mqtt").get_json()["settings"]["keepalive"]["value"]


def rollouts(app: Flask) -> list[Rollout]:
    with app.app_context():
        rows = list(db.session.execute(db.select(Rollout).order_by(Rollout.id)).scalars())
        db.session.expunge_all()
        return rows


def actions(app: Flask) -> list[str]:
    with app.app_context():
        return list(db.session.execute(db.select(AuditEntry.action)
                                       .order_by(AuditEntry.id)).scalars())


def text(response) -> str:
    return re.sub(r"\s+", " ", response.get_data(as_text=True))


def save_with_plan(client: FlaskClient, headers=None, **form):
    data = {"keepalive": "45", "rollout_wave": ["canary"], "rollout_deadline": "120",
            **form}
    return client.post("/settings/messaging/mqtt", data=data, headers=headers or {})


def test_the_form_offers_a_plan_only_when_services_are_registered(admin_client, fleet,
                                                                  viewer_client) -> None:
    html = text(admin_client.get("/settings/messaging/mqtt"))
    assert "Roll out in waves (optional)" in html
    for name in SERVICES:
        assert f'name="rollout_wave" value="{name}"' in html
    assert 'name="rollout_share"' in html and 'name="rollout_deadline"' in html
    assert 'href="/settings/rollouts"' in html
    assert "Roll out in waves" not in text(viewer_client.get("/settings/messaging/mqtt"))


@pytest.mark.parametrize("headers", [HX, {}], ids=["htmx", "no-js"])
def test_a_plan_is_shown_before_confirming_then_rolls_out(app, admin_client, fleet,
                                                         headers) -> None:
    asked = save_with_plan(admin_client, headers)
    assert asked.status_code == 409
    page = text(asked)
    assert "Nothing was saved yet." in page and "This change rolls out in waves" in page
    assert "First wave (1): <strong>canary</strong>" in page
    assert "Later (2), kept on the version they run until then: edge-a, edge-b" in page
    assert "Deadline 120 s; no automatic rollback" in page
    assert "Confirm and roll out in waves" in page
    assert 'name="rollout_wave" value="canary" checked' in page     # the plan stays in the form
    assert keepalive(admin_client) == 60 and rollouts(app) == []
    with app.app_context():
        last = db.session.execute(db.select(AuditEntry).order_by(AuditEntry.id.desc())).scalars().first()
        assert (last.action, last.outcome) == ("update", "confirmation_required")
        assert "its roll-out plan is to be confirmed" in last.summary

    done = save_with_plan(admin_client, headers, confirm="1")
    [rollout] = rollouts(app)
    assert rollout.wave == ["canary"] and rollout.state == "wave" and rollout.deadline_seconds == 120
    assert keepalive(admin_client) == 45
    if headers:
        assert done.status_code == 200
        assert "in waves started: first wave canary; 2 services keep" in text(done)
    else:
        assert done.status_code == 302
        page = text(admin_client.get(done.headers["Location"]))
        assert f"Roll-out of v{rollout.version} in waves:" in page
        assert "0 of 1 service of the first wave (canary) applied it; 2 wait on" in page


def test_without_a_plan_a_save_is_as_before(app, admin_client, fleet) -> None:
    response = admin_client.post("/settings/messaging/mqtt", data={
        "keepalive": "30", "rollout_deadline": "300"}, headers=HX)
    assert response.status_code == 200 and "Saved: keepalive." in text(response)
    assert rollouts(app) == []


@pytest.mark.parametrize(("form", "field", "words"), [
    ({"rollout_share": "0"}, "rollout_share", "Give the share of services in the first wave as 1–100 (%)."),
    ({"rollout_wave": ["ghost"]}, "rollout_wave", "No registered service named ghost."),
    ({"rollout_wave": [], "rollout_deadline": "60"}, "rollout_wave",
     "Name the services of the first wave, or give a share of them."),
    ({"rollout_deadline": "soon"}, "rollout_deadline", "Give the wave&#39;s deadline in seconds"),
])
def test_a_bad_plan_is_a_field_error_and_nothing_is_saved(app, admin_client, fleet, form, field,
                                                          words) -> None:
    for headers in (HX, {}):
        response = save_with_plan(admin_client, headers, confirm="1", **form)
        assert response.status_code == 422
        page = text(response)
        assert "Nothing was saved" in page and words in page
        assert f'id="mqtt-{field}-error"' in page
        assert "<details class=\"plan\" open>" in page
    assert keepalive(admin_client) == 60 and rollouts(app) == []


def halted(app, admin_client, fleet) -> Rollout:
    assert save_with_plan(admin_client, HX, confirm="1").status_code == 200
    ack(admin_client, fleet, "canary", "failed", "Connection Refused: not authorised.")
    [rollout] = rollouts(app)
    assert rollout.state == "halted"
    return rollout


def test_a_halted_rollout_shows_on_both_pages_admins_act_viewers_look(app, admin_client, fleet,
                                                                      viewer_client) -> None:
    rollout = halted(app, admin_client, fleet)
    main = text(admin_client.get("/settings/messaging"))
    assert f"Roll-out of v{rollout.version} halted:" in main
    assert "canary failed" in main and "Connection Refused: not authorised." in main
    assert "Resume it or roll it back on Roll-outs" in main

    page = text(admin_client.get("/settings/rollouts"))
    assert f'data-rollout="{rollout.id}" data-state="halted"' in page
    assert "The 2 services not yet reached keep being served" in page
    assert re.search(r'data-service="canary" class="wave-failed"> <td>canary</td> <td>first</td>', page)
    assert re.search(r'data-service="edge-a" class="wave-held"> <td>edge-a</td> <td>later</td>', page)
    assert "0 applied · 1 failed · 0 waiting · 2 held" in page
    assert ">Resume</button>" in page and f"Roll back to v{rollout.from_version}</button>" in page

    seen = text(viewer_client.get("/settings/rollouts"))
    assert f'data-rollout="{rollout.id}" data-state="halted"' in seen and "wave-held" in seen
    assert "<button" not in seen.split('id="rollouts"')[1].split("</main>")[0]
    assert "Follow it on Roll-outs" in text(viewer_client.get("/settings/messaging"))
    for action in ("resume", "rollback"):
        assert viewer_client.post(f"/settings/rollouts/{rollout.id}/{action}", headers=HX,
                                  data={"confirm": "yes"}).status_code == 403
    assert rollouts(app)[0].state == "halted"


def test_roll_back_without_javascript_asks_then_rolls_back(app, admin_client, fleet) -> None:
    rollout = halted(app, admin_client, fleet)
    asked = admin_client.post(f"/settings/rollouts/{rollout.id}/rollback")
    assert asked.status_code == 200
    assert f"Roll back the roll-out of v{rollout.version}?" in text(asked)
    assert rollouts(app)[0].state == "halted"
    done = admin_client.post(f"/settings/rollouts/{rollout.id}/rollback", data={"confirm": "yes"})
    assert done.status_code == 302 and done.headers["Location"].endswith("/settings/rollouts")
    page = text(admin_client.get("/settings/rollouts"))
    assert f"Rolled back: the configuration of v{rollout.from_version} is in effect again" in page
    assert "No roll-out in waves is in progress." in page and "rolled back" in page
    assert rollouts(app)[0].state == "rolled_back"
    assert keepalive(admin_client) == 60
    assert "rollout_rolled_back" in actions(app)
    assert "halted" not in text(admin_client.get("/settings/messaging")).split("<h1>")[1][:3000]


def test_resume_with_htmx_gives_the_wave_its_deadline_again(app, admin_client, fleet) -> None:
    assert save_with_plan(admin_client, HX, confirm="1").status_code == 200
    [rollout] = rollouts(app)
    with app.app_context():       # the canary says nothing until the deadline has passed
        db.session.execute(update(Rollout).values(deadline_at=utcnow() - dt.timedelta(seconds=1)))
        db.session.commit()
        assert waves.check_deadlines() == 1
    page = text(admin_client.get("/settings/rollouts"))
    assert "Deadline missed: canary did not acknowledge applied" in page
    resumed = admin_client.post(f"/settings/rollouts/{rollout.id}/resume", headers=HX)
    assert resumed.status_code == 200
    page = text(resumed)
    assert f"Roll-out of v{rollout.version} resumed: the first wave has 120 s again." in page
    assert 'hx-trigger="every 2s"' in page and "deadline in" in page
    assert rollouts(app)[0].state == "wave" and "rollout_resumed" in actions(app)
    again = admin_client.post(f"/settings/rollouts/{rollout.id}/resume", headers=HX)
    assert again.status_code == 409
    assert "Not resumed: The roll-out of v" in text(again) and "not halted" in text(again)
    # the canary now applies it: the wave is done and every service gets the new version
    ack(admin_client, fleet, "canary", "applied")
    assert rollouts(app)[0].state == "released"
    assert "Released: every service gets v" in text(admin_client.get("/settings/rollouts"))
    assert admin_client.post("/settings/rollouts/999/rollback", headers=HX).status_code == 404


def test_resume_after_a_failure_says_it_halted_again(app, admin_client, fleet) -> None:
    rollout = halted(app, admin_client, fleet)
    resumed = admin_client.post(f"/settings/rollouts/{rollout.id}/resume", data={"confirm": "yes"})
    assert resumed.status_code == 409
    assert "Resumed, and halted again at once: canary failed" in text(resumed)
    assert rollouts(app)[0].state == "halted"


def test_the_banner_follows_a_save(app, admin_client, fleet) -> None:
    assert admin_client.get("/settings/rollouts/banner").status_code == 302
    assert 'data-state' not in text(admin_client.get("/settings/rollouts/banner", headers=HX))
    save_with_plan(admin_client, HX, confirm="1")
    banner = text(admin_client.get("/settings/rollouts/banner", headers=HX))
    assert 'data-state="wave"' in banner and "every 3s" in banner


STEPS = {"protocol": "mqtt", "ok": False, "cause": "connection_refused", "from": "canary-host",
         "steps": [{"name": "dns", "status": "ok"}, {"name": "tcp", "status": "failed",
                                                     "detail": "refused"},
                   {"name": "tls", "status": "skipped"}],
         "nodes": [{"node": "127.0.0.1:1", "ok": False, "cause": "connection_refused",
                    "steps": [{"name": "dns", "status": "ok"}, {"name": "tcp", "status": "failed"},
                              {"name": "tls", "status": "skipped"}]}]}


def test_the_agents_network_steps_show_beside_a_failed_service(app, admin_client, fleet) -> None:
    assert save_with_plan(admin_client, HX, confirm="1").status_code == 200
    ack(admin_client, fleet, "canary", "failed", "Connection refused", diagnosis=STEPS)
    page = text(admin_client.get("/settings/rollouts"))
    row = page.split('data-service="canary"')[1].split("</tr>")[0]
    assert 'class="agent-diagnosis small" data-cause="connection_refused"' in row
    assert "127.0.0.1:1" in row and "canary-host" in row
    assert "agent-diagnosis" not in page.split('data-service="edge-a"')[1].split("</tr>")[0]
