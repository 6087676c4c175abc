"""Roll-outs in waves: a change with a plan reaches its first wave only; the others are served the
version they run — in the fetch and in the callbacks — until the whole wave acknowledged `applied`.
A `failed` acknowledgement (a canary given a wrong password) or a missed deadline halts it; the
admin resumes or rolls back with one action (or the plan rolls back by itself); the state is in the
database, so a restarted console carries on. The API, the audit log and /metrics say so."""
from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import update

from console import signals
from console.delivery import outbox, waves
from console.extensions import db
from console.models import AuditEntry, Rollout
from tests.conftest import make_token, reopen_app

from .receiver import Receiver

GOOD = "mqtt-Good-Pass-1"
BAD = "mqtt-Wrong-Pass-2"
SERVICES = ("canary", "edge-a", "edge-b")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def fleet(app: Flask, client, admin_token, receiver) -> dict[str, str]:
    """Three services with callbacks on MQTT (password GOOD), each on its first document, each with
    its own service token; the admin's token under "admin"."""
    h = bearer(admin_token)
    assert client.patch("/api/v1/brokers/mqtt", headers=h, json={
        "enabled": True, "host": "127.0.0.1", "username": "svc", "password": GOOD}).status_code == 200
    tokens = {"admin": admin_token}
    for name in SERVICES:
        response = client.post("/api/v1/services", headers=h, json={
            "name": name, "protocols": ["mqtt"], "callback_url": receiver.url(f"/{name}")})
        assert response.status_code == 201, response.get_json()
        receiver.secrets[name] = response.get_json()["signing_secret"]
        tokens[name] = make_token(app, f"{name}-token", "service", name)
        doc = fetch(client, tokens, name)
        ack(client, tokens, name, doc["version"], "applied")
    return tokens


def fetch(client, tokens, name) -> dict:
    response = client.get(f"/api/v1/services/{name}/config", headers=bearer(tokens[name]))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def ack(client, tokens, name, version, status, message=""):
    response = client.post(f"/api/v1/services/{name}/ack", headers=bearer(tokens[name]),
                           json={"version": version, "status": status, "message": message})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def change_password(client, tokens, password, plan=None, **extra):
    body = {"password": password, **extra}
    if plan is not None:
        body["rollout"] = plan
    return client.patch("/api/v1/brokers/mqtt", headers=bearer(tokens["admin"]), json=body)


def current_rollout(client, tokens) -> dict:
    response = client.get("/api/v1/rollouts/current", headers=bearer(tokens["admin"]))
    assert response.status_code == 200
    return response.get_json()["rollout"]


def callbacks(app: Flask, receiver: Receiver) -> dict[str, list[int]]:
    """Deliver the outbox; the versions each service was called back with so far."""
    with app.app_context():
        outbox.deliver_due()
    seen: dict[str, list[int]] = {}
    for call in receiver.calls:
        seen.setdefault(call["json"]["service"], []).append(call["json"]["version"])
    return seen


def audit_actions(app: Flask) -> list[str]:
    with app.app_context():
        return list(db.session.execute(db.select(AuditEntry.action).order_by(AuditEntry.id)).scalars())


def metrics(client) -> str:
    return client.get("/metrics").get_data(as_text=True)


def test_a_failed_canary_halts_and_the_others_never_see_the_bad_version(app, client, fleet,
                                                                         receiver) -> None:
    before = {n: fetch(client, fleet, n) for n in SERVICES}
    halted: list[dict] = []
    signals.rollout_halted.connect(lambda sender, rollout: halted.append(rollout), weak=False)
    response = change_password(client, fleet, BAD, {"wave": ["canary"], "deadline": 600})
    assert response.status_code == 200, response.get_json()
    started = response.get_json()["rollout"]
    new = response.get_json()["version"]
    assert started["state"] == "wave" and started["wave"] == ["canary"]
    assert started["held"] == ["edge-a", "edge-b"]

    # the canary is served the new version; the others the one they run
    canary = fetch(client, fleet, "canary")
    assert canary["version"] == new and canary["brokers"]["mqtt"]["password"] == BAD
    for name in ("edge-a", "edge-b"):
        doc = fetch(client, fleet, name)
        assert doc["brokers"]["mqtt"]["password"] == GOOD
        assert (doc["version"], doc["etag"]) == (before[name]["version"], before[name]["etag"])
    assert callbacks(app, receiver) == {"canary": [new]}

    # the canary cannot log in with it: it says so, and the roll-out halts
    ack(client, fleet, "canary", new, "failed", "Connection refused: not authorised (rc=5)")
    state = current_rollout(client, fleet)
    assert state["state"] == "halted" and state["halted"] is True
    assert f"canary failed v{new}: Connection refused: not authorised" in state["reason"]
    assert state["held"] == ["edge-a", "edge-b"]
    assert [r["state"] for r in halted] == ["halted"]
    assert "rollout_halted" in audit_actions(app)
    text = metrics(client)
    assert "messaging_rollout_halted 1.0" in text
    assert f'messaging_rollout_state{{state="halted",version="{new}"}} 1.0' in text
    assert "messaging_rollout_held_services 2.0" in text

    # a missed deadline later changes nothing: the others still never see the bad version
    with app.app_context():
        assert waves.check_deadlines() == 0
    for name in ("edge-a", "edge-b"):
        assert fetch(client, fleet, name)["brokers"]["mqtt"]["password"] == GOOD
    assert callbacks(app, receiver) == {"canary": [new]}

    # one action rolls back to the last version every service applied
    response = client.post(f"/api/v1/rollouts/{state['id']}/rollback", headers=bearer(fleet["admin"]))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["rollout"]["state"] == "rolled_back" and body["version"] > new
    canary = fetch(client, fleet, "canary")
    assert canary["brokers"]["mqtt"]["password"] == GOOD and canary["version"] == body["version"]
    for name in ("edge-a", "edge-b"):
        doc = fetch(client, fleet, name)
        assert (doc["version"], doc["etag"]) == (before[name]["version"], before[name]["etag"])
    assert callbacks(app, receiver) == {"canary": [new, body["version"]]}
    assert "rollout_rolled_back" in audit_actions(app)
    assert "messaging_rollout_halted 0.0" in metrics(client)
    # the rollback cannot be repeated
    again = client.post(f"/api/v1/rollouts/{state['id']}/rollback", headers=bearer(fleet["admin"]))
    assert again.status_code == 409 and "rollout" in again.get_json()["errors"]


def test_the_wave_applying_releases_the_others(app, client, fleet, receiver) -> None:
    released: list[dict] = []
    signals.rollout_released.connect(lambda sender, rollout: released.append(rollout), weak=False)
    response = change_password(client, fleet, "mqtt-Next-Pass-3", {"wave": ["canary"]})
    new = response.get_json()["version"]
    assert callbacks(app, receiver) == {"canary": [new]}
    assert fetch(client, fleet, "edge-a")["brokers"]["mqtt"]["password"] == GOOD
    ack(client, fleet, "canary", new, "applied")
    state = current_rollout(client, fleet)
    assert state["state"] == "released" and state["held"] == []
    assert [r["version"] for r in released] == [new]
    for name in ("edge-a", "edge-b"):
        doc = fetch(client, fleet, name)
        assert doc["version"] == new and doc["brokers"]["mqtt"]["password"] == "mqtt-Next-Pass-3"
    assert callbacks(app, receiver) == {"canary": [new], "edge-a": [new], "edge-b": [new]}
    assert "rollout_released" in audit_actions(app)


def test_a_missed_deadline_halts_and_resume_gives_the_wave_its_time_again(app, client, fleet,
                                                                          receiver) -> None:
    response = change_password(client, fleet, "mqtt-Next-Pass-4",
                               {"wave": ["canary", "edge-a"], "deadline": 30})
    new = response.get_json()["version"]
    ack(client, fleet, "canary", new, "applied")           # edge-a never answers
    assert current_rollout(client, fleet)["state"] == "wave"
    with app.app_context():
        assert waves.check_deadlines() == 0                # not due yet
        db.session.execute(update(Rollout).values(
            deadline_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
        db.session.commit()
        assert waves.check_deadlines() == 1
    state = current_rollout(client, fleet)
    assert state["state"] == "halted"
    assert state["reason"] == (f"Deadline missed: edge-a did not acknowledge applied v{new} "
                               "within 30 s")
    assert fetch(client, fleet, "edge-b")["brokers"]["mqtt"]["password"] == GOOD

    resumed = client.post(f"/api/v1/rollouts/{state['id']}/resume", headers=bearer(fleet["admin"]))
    assert resumed.status_code == 200 and resumed.get_json()["rollout"]["state"] == "wave"
    ack(client, fleet, "edge-a", new, "applied")
    assert current_rollout(client, fleet)["state"] == "released"
    assert fetch(client, fleet, "edge-b")["version"] == new
    assert "rollout_resumed" in audit_actions(app)
    # resuming what is not halted is refused, nothing changes
    again = client.post(f"/api/v1/rollouts/{state['id']}/resume", headers=bearer(fleet["admin"]))
    assert again.status_code == 409


def test_automatic_rollback_per_plan(app, client, fleet, receiver) -> None:
    response = change_password(client, fleet, BAD, {"wave": ["canary"], "auto_rollback": True})
    new = response.get_json()["version"]
    ack(client, fleet, "canary", new, "failed", "not authorised")
    state = current_rollout(client, fleet)
    assert state["state"] == "rolled_back"
    canary = fetch(client, fleet, "canary")
    assert canary["version"] > new and canary["brokers"]["mqtt"]["password"] == GOOD
    assert "edge-a" not in callbacks(app, receiver)


def test_a_share_picks_the_first_wave_and_the_preview_shows_the_plan(app, client, fleet) -> None:
    plan = {"share": 50, "deadline": 120}
    preview = change_password(client, fleet, "mqtt-Next-Pass-5", plan, dry_run=True)
    assert preview.status_code == 200, preview.get_json()
    shown = preview.get_json()["rollout"]
    assert shown["first_wave"] == ["canary", "edge-a"] and shown["later"] == ["edge-b"]
    assert "First wave: canary, edge-a" in shown["text"] and "120 s" in shown["text"]
    assert current_rollout(client, fleet) is None            # a preview starts nothing
    started = change_password(client, fleet, "mqtt-Next-Pass-5", plan).get_json()["rollout"]
    assert started["wave"] == ["canary", "edge-a"] and started["held"] == ["edge-b"]


@pytest.mark.parametrize("plan, field", [
    ({"wave": ["nobody"]}, "rollout.wave"),
    ({"share": 0}, "rollout.share"),
    ({"share": "lots"}, "rollout.share"),
    ({"wave": ["canary"], "deadline": -5}, "rollout.deadline"),
    ({"wave": ["canary"], "auto_rollback": "perhaps"}, "rollout.auto_rollback"),
    ({"deadline": 10}, "rollout.wave"),
    ({"wave": ["canary"], "waves": 3}, "rollout"),
    ("canary", "rollout"),
])
def test_a_bad_plan_saves_nothing(app, client, fleet, plan, field) -> None:
    response = change_password(client, fleet, BAD, plan)
    assert response.status_code == 422
    assert field in response.get_json()["errors"]
    assert fetch(client, fleet, "canary")["brokers"]["mqtt"]["password"] == GOOD
    assert current_rollout(client, fleet) is None


def test_without_a_plan_every_service_gets_the_change_at_once(app, client, fleet, receiver) -> None:
    new = change_password(client, fleet, "mqtt-Next-Pass-6").get_json()["version"]
    assert callbacks(app, receiver) == {n: [new] for n in SERVICES}
    assert current_rollout(client, fleet) is None


def test_a_restarted_console_carries_on(app, client, fleet, receiver, tmp_path: Path) -> None:
    """The roll-out's state is in the database: a new console process serves the held services
    the old version, releases on the wave's acks, and its delivery worker checks the deadlines."""
    response = change_password(client, fleet, "mqtt-Next-Pass-7", {"wave": ["canary"]})
    new = response.get_json()["version"]
    with app.app_context():
        db.engine.dispose()
    second = reopen_app(tmp_path / "instance", DELIVERY_POLL_SECONDS=0.05)
    other = second.test_client()
    assert fetch(other, fleet, "edge-a")["brokers"]["mqtt"]["password"] == GOOD
    ack(other, fleet, "canary", new, "applied")
    assert current_rollout(other, fleet)["state"] == "released"
    assert fetch(other, fleet, "edge-a")["version"] == new

    # a roll-out whose deadline passes while the console is down halts once its worker runs
    response = change_password(other, fleet, "mqtt-Next-Pass-8", {"wave": ["canary"]})
    with second.app_context():
        db.session.execute(update(Rollout).where(Rollout.state == "wave").values(
            deadline_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
        db.session.commit()
        db.engine.dispose()
    third = reopen_app(tmp_path / "instance", DELIVERY_POLL_SECONDS=0.05)
    done = threading.Event()
    signals.rollout_halted.connect(lambda sender, rollout: done.set(), weak=False)
    worker = outbox.start(third)
    assert worker is not None
    try:
        assert done.wait(30), "the restarted console's worker never checked the deadline"
    finally:
        worker.stop()
    assert current_rollout(third.test_client(), fleet)["state"] == "halted"
