"""A console killed (SIGKILL, master and workers, as a crash or an OOM kill would) in the middle of a
roll-out in waves, and started again on the same database — gunicorn as `make run` serves it: the
roll-out carries on from the database. A deadline that passed while the console was down halts it
after the restart, the services outside the first wave stay on the version they ran the whole time,
and a roll-out resumed and killed again is released by the canary's acknowledgement after the second
restart, when the others get the new version."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from tests.live_gunicorn import Gunicorn, api, flask, get, prepare

SERVICES = ("canary", "edge-a", "edge-b")
DEADLINE = 20     # seconds: room for a restart on a busy machine before the resumed wave's ends


def _kill(server: Gunicorn) -> None:
    assert server.proc is not None
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait(10)


def _start(env: dict[str, str], logs: Path, name: str) -> Gunicorn:
    server = Gunicorn(env, logs, workers=1, threads=4, name=name).start()
    server.wait_all_workers()
    return server


def _served(url: str, token: str, name: str) -> dict[str, Any]:
    status, _, body = get(url, f"/api/v1/services/{name}/config",
                          headers={"Authorization": f"Bearer {token}"})
    assert status == 200, body
    return json.loads(body)


def _ack(url: str, token: str, name: str, version: int, state: str = "applied") -> None:
    status, _, body = api(url, "POST", f"/api/v1/services/{name}/ack", token,
                          {"version": version, "status": state})
    assert status == 200, body


def _rollout(url: str, admin: str) -> dict[str, Any]:
    status, _, body = api(url, "GET", "/api/v1/rollouts/current", admin)
    assert status == 200
    return body["rollout"]


def _until(url: str, admin: str, state: str, seconds: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while (rollout := _rollout(url, admin))["state"] != state:
        assert time.monotonic() < deadline, rollout
        time.sleep(0.2)
    return rollout


def test_a_rollout_survives_the_console_being_killed_and_restarted(tmp_path: Path) -> None:
    env = {**os.environ, "CONSOLE_INSTANCE_PATH": str(tmp_path / "instance"),
           "CONSOLE_CHECK_SCHEDULER": "false", "CONSOLE_DELIVERY_POLL_SECONDS": "0.3"}
    logs = tmp_path / "logs"
    admin = prepare(env)
    server = _start(env, logs, "first")
    tokens: dict[str, str] = {}
    try:
        assert api(server.url, "PATCH", "/api/v1/brokers/mqtt", admin,
                   {"enabled": True, "host": "127.0.0.1"})[0] == 200
        for name in SERVICES:
            assert api(server.url, "POST", "/api/v1/services", admin,
                       {"name": name, "protocols": ["mqtt"]})[0] == 201
            tokens[name] = flask(env, "tokens", "create", f"{name}-token", "--role", "service",
                                 "--service", name)
            _ack(server.url, tokens[name], name, _served(server.url, tokens[name], name)["version"])
        old = _served(server.url, tokens["edge-a"], "edge-a")["version"]

        status, _, body = api(server.url, "PATCH", "/api/v1/brokers/mqtt", admin, {
            "keepalive": 45, "rollout": {"wave": ["canary"], "deadline": DEADLINE}})
        assert status == 200, body
        started, new = time.monotonic(), body["version"]
        assert body["rollout"]["state"] == "wave"
        assert _served(server.url, tokens["canary"], "canary")["version"] == new
        assert _served(server.url, tokens["edge-a"], "edge-a")["version"] == old
        _kill(server)                        # mid wave; the deadline passes while it is down
        time.sleep(max(0.0, started + DEADLINE + 1 - time.monotonic()))

        server = _start(env, logs, "second")
        for name in ("edge-a", "edge-b"):    # still gated, before and after the halt
            assert _served(server.url, tokens[name], name)["version"] == old
        halted = _until(server.url, admin, "halted")
        assert halted["reason"].startswith("Deadline missed: canary did not acknowledge applied")
        assert halted["held"] == ["edge-a", "edge-b"]
        for name in ("edge-a", "edge-b"):
            doc = _served(server.url, tokens[name], name)
            assert doc["version"] == old and doc["brokers"]["mqtt"]["keepalive"] == 60
        metrics = get(server.url, "/metrics")[2]
        assert "messaging_rollout_halted 1.0" in metrics

        status, _, body = api(server.url, "POST", f"/api/v1/rollouts/{halted['id']}/resume", admin)
        assert status == 200 and body["rollout"]["state"] == "wave", body
        _kill(server)                        # mid wave again, the new deadline still ahead
        server = _start(env, logs, "third")
        assert _rollout(server.url, admin)["state"] == "wave"
        assert _served(server.url, tokens["edge-b"], "edge-b")["version"] == old
        _ack(server.url, tokens["canary"], "canary", new)
        released = _until(server.url, admin, "released", 10)
        assert released["held"] == []
        for name in ("edge-a", "edge-b"):
            doc = _served(server.url, tokens[name], name)
            assert doc["version"] == new and doc["brokers"]["mqtt"]["keepalive"] == 45
    finally:
        server.stop()
