"""Checks wired into the console, against the real lab brokers: CLI exit codes, the page's Test
connection and save-anyway guard, Check now, the scheduler, and several gunicorn workers sharing one
PostgreSQL database without checking a protocol twice per interval."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import sqlalchemy as sa
from flask import Flask

from console.models import utcnow
from console.settings import service
from tests.live_gunicorn import Gunicorn, flask, pg_database
from tests.live_gunicorn import free_port as _free_port

ROOT = Path(__file__).resolve().parents[2]
HX = {"HX-Request": "true"}


def point(app: Flask, protocol: str, **values) -> None:
    with app.app_context():
        result = service.apply_changes(protocol, {"enabled": True, **values}, "test", confirm=True)
        assert result.errors == {}, result.errors


def test_cli_check_exit_codes(app: Flask, runner, lab) -> None:
    point(app, "mqtt", host="127.0.0.1", port=lab["brokers"]["mqtt"]["plain"])
    point(app, "nats", host="127.0.0.1", port=lab["brokers"]["nats"]["plain"])
    up = runner.invoke(args=["brokers", "check", "--json"])
    body = json.loads(up.output)
    assert up.exit_code == 0 and body["ok"] is True
    assert set(body["brokers"]) == {"mqtt", "nats"}
    assert body["brokers"]["nats"]["identity"]["target"] == f"127.0.0.1:{lab['brokers']['nats']['plain']}"
    point(app, "nats", port=lab["faults"]["refused"])
    down = runner.invoke(args=["brokers", "check", "--timeout", "2"])
    assert down.exit_code == 1
    assert "NATS" in down.output and "DOWN" in down.output and "connection_refused" in down.output
    only = runner.invoke(args=["brokers", "check", "mqtt", "--json"])
    assert only.exit_code == 0 and list(json.loads(only.output)["brokers"]) == ["mqtt"]
    with app.app_context():
        from console import checks
        assert checks.latest()["nats"].origin == "cli"


def test_no_enabled_protocol_is_nothing_to_check(runner) -> None:
    result = runner.invoke(args=["brokers", "check"])
    assert result.exit_code == 0 and "No protocol is enabled" in result.output


def test_test_connection_checks_unsaved_values(app: Flask, admin_client, lab) -> None:
    ok = admin_client.post("/settings/messaging/mqtt/test", headers=HX,
                           data={"host": "127.0.0.1", "port": str(lab["brokers"]["mqtt"]["plain"])})
    assert "Connected" in ok.get_data(as_text=True) and "Not saved yet" in ok.get_data(as_text=True)
    bad = admin_client.post("/settings/messaging/mqtt/test", headers=HX,
                            data={"host": "127.0.0.1", "port": str(lab["faults"]["refused"])})
    assert "connection_refused" in bad.get_data(as_text=True)
    invalid = admin_client.post("/settings/messaging/mqtt/test", headers=HX, data={"port": "0"})
    assert "Not tested" in invalid.get_data(as_text=True)
    assert admin_client.get("/api/v1/brokers/mqtt").get_json()["settings"]["port"]["source"] == "default"


def test_installation_time_change_that_fails_needs_save_anyway(app: Flask, admin_client, lab) -> None:
    refused = str(lab["faults"]["refused"])
    first = admin_client.post("/settings/messaging/mqtt", headers=HX,
                              data={"enabled": ["false", "true"], "host": "127.0.0.1", "port": refused})
    html = first.get_data(as_text=True)
    assert first.status_code == 409 and "Save anyway" in html and "connection_refused" in html
    assert admin_client.get("/api/v1/brokers/mqtt").get_json()["enabled"] is False
    forced = admin_client.post("/settings/messaging/mqtt", headers=HX,
                               data={"enabled": ["false", "true"], "host": "127.0.0.1", "port": refused,
                                     "save_anyway": "1"})
    assert forced.status_code == 200 and "Saved:" in forced.get_data(as_text=True)
    good = admin_client.post("/settings/messaging/mqtt", headers=HX,
                             data={"enabled": ["false", "true"], "host": "127.0.0.1",
                                   "port": str(lab["brokers"]["mqtt"]["plain"])})
    assert good.status_code == 200 and "Saved: port." in good.get_data(as_text=True)
    runtime = admin_client.post("/settings/messaging/mqtt", headers=HX,
                                data={"enabled": ["false", "true"], "host": "127.0.0.1",
                                      "port": refused, "keepalive": "30", "save_anyway": "1"})
    assert runtime.status_code == 200
    only_runtime = admin_client.post("/settings/messaging/mqtt", headers=HX,
                                     data={"enabled": ["false", "true"], "keepalive": "40"})
    assert only_runtime.status_code == 200, "runtime changes never ask"


def test_check_now_and_status_fragment(app: Flask, admin_client, lab) -> None:
    point(app, "nats", host="127.0.0.1", port=lab["brokers"]["nats"]["plain"])
    html = admin_client.post("/settings/messaging/nats/check", headers=HX).get_data(as_text=True)
    assert "● up" in html and "ms ·" in html
    point(app, "nats", port=lab["faults"]["refused"])
    admin_client.post("/settings/messaging/nats/check", headers=HX)
    status = admin_client.get("/settings/messaging/nats/status", headers=HX).get_data(as_text=True)
    assert "● down" in status and "connection_refused" in status
    assert "<svg" not in status, "the sparkline shows only checks made with the current settings"
    admin_client.post("/settings/messaging/nats/check", headers=HX)
    status = admin_client.get("/settings/messaging/nats/status", headers=HX).get_data(as_text=True)
    assert "<svg" in status and 'aria-label="Last 2 checks with the current settings"' in status
    assert 'hx-trigger="every 5s"' in status


def test_scheduler_checks_due_protocols_once(app: Flask, lab) -> None:
    from console import checks
    from console.checks.scheduler import Scheduler

    point(app, "mqtt", host="127.0.0.1", port=lab["brokers"]["mqtt"]["plain"])
    point(app, "nats", host="127.0.0.1", port=lab["faults"]["refused"])
    app.config["CHECK_INTERVAL"] = 60
    scheduler = Scheduler(app)
    try:
        assert sorted(scheduler.run_due()) == ["mqtt", "nats"]
        assert scheduler.run_due() == []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with app.app_context():
                rows = checks.latest()
            if {"mqtt", "nats"} <= set(rows):
                break
            time.sleep(0.05)
        assert rows["mqtt"].status == "up" and rows["nats"].cause == "connection_refused"
        assert rows["mqtt"].origin == "scheduler"
        second = Scheduler(app)
        assert second.run_due() == []
        second.stop()
    finally:
        scheduler.stop()


def test_several_gunicorn_workers_do_not_duplicate_checks(tmp_path: Path, lab) -> None:
    """Three workers on one PostgreSQL database: each protocol is checked at most once per interval.
    The window opens once every worker answers (on a loaded machine they boot one by one), and only
    the checks made within it are counted."""
    url = pg_database("multiworker")
    env = {**os.environ, "CONSOLE_DATABASE_URL": url, "CONSOLE_INSTANCE_PATH": str(tmp_path),
           "CONSOLE_CHECK_INTERVAL": "2", "CONSOLE_CHECK_TIMEOUT": "1.5",
           "SP_MQTT_ENABLED": "true", "SP_MQTT_HOST": "127.0.0.1",
           "SP_MQTT_PORT": str(lab["brokers"]["mqtt"]["plain"]),
           "SP_NATS_ENABLED": "true", "SP_NATS_HOST": "127.0.0.1",
           "SP_NATS_PORT": str(lab["brokers"]["nats"]["plain"])}
    flask(env, "db", "upgrade")
    server = Gunicorn(env, tmp_path / "logs", workers=3)
    window = 7.0
    with server:
        server.wait_all_workers()
        opened = utcnow()
        time.sleep(window)
        closed = utcnow()
    err = server.log()
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        counts = dict(conn.execute(sa.text(
            "SELECT protocol, count(*) FROM broker_checks WHERE checked_at >= :a AND checked_at <= :b "
            "GROUP BY protocol"), {"a": opened, "b": closed}).all())
        workers = conn.execute(sa.text("SELECT count(DISTINCT holder) FROM check_leases")).scalar()
        env_audits = conn.execute(sa.text(
            "SELECT count(*) FROM audit_entries WHERE action = 'environment'")).scalar()
    engine.dispose()
    assert err.count("Booting worker") == 3, err[-2000:]
    most = int(window / 2) + 1
    assert 2 <= counts.get("mqtt", 0) <= most, (counts, err[-1500:])
    assert 2 <= counts.get("nats", 0) <= most, counts
    assert workers >= 1 and env_audits >= 1


def test_stopped_broker_turns_red_within_one_interval(app: Flask, admin_client, tmp_path) -> None:
    """A throwaway nats-server: up, then killed; the scheduler marks it down with the right cause
    within one interval, and the page's status fragment says so."""
    import shutil

    from console.checks.scheduler import Scheduler

    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    port = _free_port()
    server = subprocess.Popen([binary, "-a", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        point(app, "nats", host="127.0.0.1", port=port)
        app.config.update(CHECK_INTERVAL=1.0, CHECK_TIMEOUT=1.0)
        scheduler = Scheduler(app, tick=0.2)
        scheduler.start()

        def badge() -> str:
            return admin_client.get("/settings/messaging/nats/status", headers=HX).get_data(as_text=True)

        def wait_for(text: str, seconds: float) -> float:
            started = time.monotonic()
            while time.monotonic() - started < seconds:
                if text in badge():
                    return time.monotonic() - started
                time.sleep(0.1)
            raise AssertionError(f"{text!r} not shown within {seconds} s: {badge()}")

        wait_for("● up", 5)
        server.kill()
        server.wait(5)
        took = wait_for("● down", 1.0 + 1.0 + 1.0)
        assert "connection_refused" in badge()
        assert took <= 3.0
    finally:
        if server.poll() is None:
            server.kill()
        if "scheduler" in locals():
            scheduler.stop()


# --- a status is the status of the current settings ---------------------------------------------

def _status(admin_client, protocol: str) -> str:
    return admin_client.get(f"/settings/messaging/{protocol}/status", headers=HX).get_data(as_text=True)


def test_save_anyway_with_a_wrong_port_never_shows_the_old_up(app: Flask, admin_client, client,
                                                              lab) -> None:
    plain, refused = str(lab["brokers"]["mqtt"]["plain"]), str(lab["faults"]["refused"])
    point(app, "mqtt", host="127.0.0.1", port=plain)
    admin_client.post("/settings/messaging/mqtt/check", headers=HX)
    assert "● up" in _status(admin_client, "mqtt")
    form = {"enabled": ["false", "true"], "host": "127.0.0.1", "port": refused}
    guarded = admin_client.post("/settings/messaging/mqtt", headers=HX, data=form)
    assert guarded.status_code == 409 and "Save anyway" in guarded.get_data(as_text=True)
    assert "● up" in _status(admin_client, "mqtt"), "a test of unsaved values hides nothing"
    assert client.get("/readyz").get_json()["brokers"]["mqtt"]["status"] == "up"
    forced = admin_client.post("/settings/messaging/mqtt", headers=HX, data={**form, "save_anyway": "1"})
    html = forced.get_data(as_text=True)
    assert forced.status_code == 200 and forced.headers["HX-Trigger"] == "settings-saved"
    badge = html.split('id="mqtt-status"', 1)[1].split("</div>", 1)[0]
    assert "● down" in badge and "connection_refused" in badge and "● up" not in badge
    overview = admin_client.get("/settings/messaging/overview", headers=HX).get_data(as_text=True)
    row = overview.split('href="/settings/messaging/mqtt"', 1)[1].split("</tr>", 1)[0]
    assert "● down" in row and "connection_refused" in row
    mqtt = client.get("/readyz").get_json()["brokers"]["mqtt"]
    assert (mqtt["status"], mqtt["cause"]) == ("down", "connection_refused")
    assert admin_client.get("/api/v1/brokers/mqtt").get_json()["status"]["status"] == "down"
    assert 'messaging_broker_up{protocol="mqtt"} 0.0' in client.get("/metrics").get_data(as_text=True)
    with app.app_context():
        from console import checks
        assert checks.latest()["mqtt"].origin == "guard", "the save guard's test is the check"


def test_a_change_is_re_checked_at_once(app: Flask, admin_client, client, lab) -> None:
    from console import checks
    from console.checks.scheduler import Scheduler

    point(app, "nats", host="127.0.0.1", port=lab["brokers"]["nats"]["plain"])
    app.config["CHECK_INTERVAL"] = 600
    scheduler = Scheduler(app)

    def settled() -> dict:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with scheduler._lock:
                busy = bool(scheduler._running)
            nats = client.get("/readyz").get_json()["brokers"]["nats"]
            if not busy and not nats.get("rechecking") and nats["status"] != "unknown":
                return nats
            time.sleep(0.05)
        raise AssertionError(f"no result for the current settings: {nats}")

    try:
        assert scheduler.run_due() == ["nats"]
        assert settled()["status"] == "up"
        assert scheduler.run_due() == [], "not due again within the interval"
        patched = admin_client.patch("/api/v1/brokers/nats", json={"port": lab["faults"]["refused"]})
        assert patched.status_code == 200 and patched.get_json()["status"]["rechecking"] is True
        assert client.get("/readyz").get_json()["brokers"]["nats"]["rechecking"] is True
        assert "● re-checking" in _status(admin_client, "nats")
        assert scheduler.run_due() == ["nats"], "other settings: due at once, not in 600 s"
        nats = settled()
        assert (nats["status"], nats["cause"]) == ("down", "connection_refused")
        assert "● down" in _status(admin_client, "nats")
        assert scheduler.run_due() == []
    finally:
        scheduler.stop()
    with app.app_context():
        assert checks.latest()["nats"].origin == "scheduler"


def test_test_connection_says_tls_off_in_words(app: Flask, admin_client, lab) -> None:
    rabbit = lab["brokers"]["rabbitmq"]
    ok = admin_client.post("/settings/messaging/rabbitmq/test", headers=HX,
                           data={"host": "127.0.0.1", "port": str(rabbit["plain"]),
                                 "username": rabbit["username"], "password": rabbit["password"],
                                 "vhost": rabbit["vhost"]})
    text = ok.get_data(as_text=True)
    assert "Connected" in text and "TLS off" in text and f"vhost {rabbit['vhost']}" in text
    assert "tls False" not in text and "False" not in text and "cluster_name" not in text
