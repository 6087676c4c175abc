"""The delivery outbox: every committed change that alters a service's document queues one signed
callback (page, API, CLI import, rollback, environment at start-up); deliveries are retried with
backoff, survive restarts, are coalesced, never follow redirects and carry no secret."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from flask import Flask

from console.delivery import outbox
from console.extensions import db
from console.models import Delivery, ExtensionService
from tests.conftest import reopen_app

from .receiver import Receiver

FAST = {"DELIVERY_RETRY_BASE": 0.05, "DELIVERY_RETRY_MAX": 0.2, "DELIVERY_TIMEOUT": 1.0,
        "DELIVERY_MAX_ATTEMPTS": 4}
SECRET = "mqtt-Pass-Secret-99"


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def fast_app(app: Flask) -> Flask:
    app.config.update(FAST)
    return app


def register(client, token, name, receiver, protocols=("mqtt", "rabbitmq")):
    response = client.post("/api/v1/services", headers=bearer(token), json={
        "name": name, "protocols": list(protocols), "callback_url": receiver.url(f"/{name}")})
    assert response.status_code in (200, 201), response.get_json()
    secret = response.get_json()["signing_secret"]
    receiver.secrets[name] = secret
    return secret


def deliver_all(app: Flask, rounds: int = 1) -> int:
    with app.app_context():
        return sum(outbox.deliver_due() for _ in range(rounds))


def deliveries(app: Flask) -> list[Delivery]:
    with app.app_context():
        rows = list(db.session.execute(db.select(Delivery).order_by(Delivery.id)).scalars())
        db.session.expunge_all()
        return rows


def enable_mqtt(client, token, **extra):
    response = client.patch("/api/v1/brokers/mqtt", headers=bearer(token),
                            json={"enabled": True, **extra})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_api_change_is_delivered_once_signed_and_without_secrets(fast_app, client, admin_token,
                                                                 receiver) -> None:
    register(client, admin_token, "edge", receiver)
    assert deliver_all(fast_app) == 0           # a new service fetches its first version itself
    result = enable_mqtt(client, admin_token, password=SECRET, username="svc")
    assert deliver_all(fast_app) == 1 and deliver_all(fast_app) == 0
    calls = receiver.wait_for(1)
    assert len(calls) == 1 and calls[0]["valid"] and calls[0]["path"] == "/edge"
    body = calls[0]["json"]
    assert set(body) == {"service", "version", "etag"}
    assert body["service"] == "edge" and body["version"] == result["version"]
    assert SECRET.encode() not in calls[0]["body"]
    (row,) = deliveries(fast_app)
    assert row.state == "delivered" and row.attempts == 1


def test_unrelated_change_notifies_nobody(fast_app, client, admin_token, receiver) -> None:
    register(client, admin_token, "edge", receiver, protocols=("mqtt",))
    enable_mqtt(client, admin_token)
    deliver_all(fast_app)
    before = len(receiver.wait_for(1))
    # NATS is not a protocol edge supports: its document does not change
    assert client.patch("/api/v1/brokers/nats", headers=bearer(admin_token),
                        json={"enabled": True, "host": "nats.example"}).status_code == 200
    assert deliver_all(fast_app) == 0 and len(receiver.calls) == before


def test_every_writer_goes_through_the_outbox(fast_app, client, admin_token, admin_client,
                                              receiver, tmp_path, monkeypatch) -> None:
    register(client, admin_token, "edge", receiver, protocols=("mqtt",))
    versions = []
    # page
    assert admin_client.post("/settings/messaging/mqtt", data={"enabled": "true"}).status_code == 302
    # API
    versions.append(enable_mqtt(client, admin_token, host="mqtt-2.example")["version"])
    # CLI import
    runner = fast_app.test_cli_runner()
    exported = tmp_path / "export.yaml"
    assert runner.invoke(args=["config", "export", "-o", str(exported)]).exit_code == 0
    text = exported.read_text().replace("mqtt-2.example", "mqtt-3.example")
    exported.write_text(text)
    assert runner.invoke(args=["config", "import", str(exported)]).exit_code == 0, "import"
    # rollback to the page's version
    history = client.get("/api/v1/versions", headers=bearer(admin_token)).get_json()["versions"]
    target = [v for v in history if v["origin"] == "page"][0]["id"]
    assert client.post(f"/api/v1/versions/{target}/rollback", headers=bearer(admin_token),
                       json={"confirm": True}).status_code == 200
    rows = deliveries(fast_app)
    # each change superseded the one before it: one delivery waits, for the newest version
    assert [r.state for r in rows].count("pending") == 1
    assert {r.state for r in rows[:-1]} == {"superseded"}
    # environment at start-up: a new process whose environment changes mqtt's host
    deliver_all(fast_app)
    monkeypatch.setenv("SP_MQTT_HOST", "mqtt-env.example")
    restarted = reopen_app(Path(fast_app.instance_path), **FAST)
    with restarted.app_context():
        from console.settings.changes import record_environment
        record_environment()
    assert deliver_all(restarted) == 1
    calls = receiver.wait_for(2)
    assert len(calls) == 2 and all(c["valid"] for c in calls)
    assert calls[1]["json"]["etag"] != calls[0]["json"]["etag"]


def test_receiver_down_then_up_is_delivered_once_with_backoff(fast_app, client, admin_token,
                                                               receiver) -> None:
    register(client, admin_token, "edge", receiver)
    receiver.stop()
    enable_mqtt(client, admin_token)
    assert deliver_all(fast_app) == 1
    (row,) = deliveries(fast_app)
    assert row.state == "pending" and row.attempts == 1
    assert "refused" in row.last_error.lower() or "connect" in row.last_error.lower()
    assert row.due_at > dt.datetime.now(dt.UTC)      # backoff: not due at once
    assert deliver_all(fast_app) == 0
    api = client.get("/api/v1/services/edge", headers=bearer(admin_token)).get_json()
    assert api["rollout"]["delivery"]["state"] == "retrying"
    assert api["rollout"]["delivery"]["last_error"] == row.last_error
    receiver.start()
    import time
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not receiver.calls:
        deliver_all(fast_app)
        time.sleep(0.05)
    assert len(receiver.wait_for(1)) == 1
    (row,) = deliveries(fast_app)
    assert row.state == "delivered" and row.attempts == 2


def test_restart_between_retries_still_delivers(fast_app, client, admin_token, receiver) -> None:
    register(client, admin_token, "edge", receiver)
    receiver.stop()
    enable_mqtt(client, admin_token)
    deliver_all(fast_app)
    receiver.start()
    restarted = reopen_app(Path(fast_app.instance_path), **FAST)   # a new process on the same database
    import time
    time.sleep(0.25)
    assert deliver_all(restarted) == 1
    assert len(receiver.wait_for(1)) == 1 and receiver.calls[0]["valid"]


def test_gives_up_after_the_retry_limit(fast_app, client, admin_token, receiver) -> None:
    register(client, admin_token, "edge", receiver)
    receiver.status = 500
    enable_mqtt(client, admin_token)
    import time
    for _ in range(40):
        deliver_all(fast_app)
        if deliveries(fast_app)[0].state == "failed":
            break
        time.sleep(0.05)
    (row,) = deliveries(fast_app)
    assert row.state == "failed" and row.attempts == FAST["DELIVERY_MAX_ATTEMPTS"]
    assert row.last_error == "Answered 500"
    status = client.get("/api/v1/rollout", headers=bearer(admin_token)).get_json()
    assert "edge: callback failed (Answered 500)" in status["text"]


def test_redirects_are_not_followed(fast_app, client, admin_token, receiver) -> None:
    register(client, admin_token, "edge", receiver)
    receiver.status = 302
    enable_mqtt(client, admin_token)
    deliver_all(fast_app)
    (row,) = deliveries(fast_app)
    assert row.state == "pending" and "redirect, not followed" in row.last_error
    assert len(receiver.calls) == 1


def test_a_claimed_delivery_is_not_sent_twice(fast_app, client, admin_token, receiver) -> None:
    register(client, admin_token, "edge", receiver)
    enable_mqtt(client, admin_token)
    with fast_app.app_context():
        token, claimed = outbox.claim()
        assert len(claimed) == 1
        assert outbox.claim()[1] == []          # another replica finds nothing to take
        outbox.finish(token, claimed[0].id, outbox.Attempt(True))
    assert deliveries(fast_app)[0].state == "delivered"


@pytest.mark.parametrize("url, message", [
    ("ftp://edge/hook", "http:// or https://"), ("http:///nohost", "http:// or https://"),
    ("http://user:pw@edge/hook", "credentials"), ("http://edge:99999/hook", "port"),
    ("http://edge/ hook", "http:// or https://"), (42, "http:// or https://")])
def test_callback_urls_are_validated(client, admin_token, url, message) -> None:
    response = client.post("/api/v1/services", headers=bearer(admin_token), json={
        "name": "edge", "protocols": ["mqtt"], "callback_url": url})
    assert response.status_code == 422
    assert message in response.get_json()["errors"]["callback_url"]
    assert client.get("/api/v1/services", headers=bearer(admin_token)).get_json()["services"] == []


def test_registration_rotates_the_signing_secret(client, admin_token, receiver, app) -> None:
    first = register(client, admin_token, "edge", receiver)
    second = register(client, admin_token, "edge", receiver)
    assert first != second and len(second) == 64
    with app.app_context():
        row = db.session.execute(db.select(ExtensionService)).scalar_one()
        assert second not in (row.signing_secret or "")     # encrypted at rest
    # without a callback URL the answer carries no secret and callbacks stay as they are
    response = client.post("/api/v1/services", headers=bearer(admin_token),
                           json={"name": "edge", "protocols": ["mqtt"]})
    assert "signing_secret" not in response.get_json()
    assert response.get_json()["callback_url"] == receiver.url("/edge")


def test_impact_preview_lists_the_services_to_notify(client, admin_token, receiver) -> None:
    register(client, admin_token, "edge", receiver, protocols=("mqtt", "kafka"))
    client.post("/api/v1/services", headers=bearer(admin_token),
                json={"name": "lake", "protocols": ["kafka"]})
    preview = client.patch("/api/v1/brokers/mqtt", headers=bearer(admin_token),
                           json={"enabled": True, "dry_run": True}).get_json()
    assert preview["impact"]["notified"] == [{"service": "edge", "protocol": "mqtt",
                                              "callback": True}]


def test_worker_thread_delivers_right_after_the_commit(fast_app, client, admin_token,
                                                        receiver) -> None:
    fast_app.config["DELIVERY_POLL_SECONDS"] = 30       # only the wake-up can make it quick
    register(client, admin_token, "edge", receiver)
    worker = outbox.start(fast_app)
    try:
        enable_mqtt(client, admin_token)
        calls = receiver.wait_for(1, timeout=5)
        assert len(calls) == 1 and calls[0]["valid"]
    finally:
        worker.stop()
        fast_app.extensions.pop("console_delivery", None)


def test_metrics_show_versions_and_deliveries(fast_app, client, admin_token, receiver) -> None:
    register(client, admin_token, "edge", receiver)
    receiver.stop()
    version = enable_mqtt(client, admin_token)["version"]
    deliver_all(fast_app)
    text = client.get("/metrics").get_data(as_text=True)
    assert f"messaging_config_version {float(version)}" in text
    assert f'messaging_service_config_version{{service="edge"}} {float(version)}' in text
    assert 'messaging_config_deliveries{state="pending"} 1.0' in text
    assert 'messaging_service_config_applied{service="edge"} 0.0' in text
    json.dumps(text)
