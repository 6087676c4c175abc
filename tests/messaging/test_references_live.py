"""A secret file rotated under a running gunicorn (two workers, each with its reference poller): no
one saves, yet within the poll interval the service's document carries the new password with a new
ETag and version, a watch held on the old ETag wakes, the audit log says "file … changed" once, and
neither value appears in any page, API answer, export, audit entry or log."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.live_gunicorn import Gunicorn, api, flask, get, prepare

OLD, NEW = "first-Secret-4711", "second-Secret-0815"


def test_rotating_a_secret_file_under_gunicorn(tmp_path: Path) -> None:
    secret = tmp_path / "secrets" / "mqtt-password"
    secret.parent.mkdir()
    secret.write_text(OLD)
    env = {**os.environ, "CONSOLE_INSTANCE_PATH": str(tmp_path / "instance"),
           "CONSOLE_CHECK_SCHEDULER": "false", "CONSOLE_REFERENCE_POLL_SECONDS": "1"}
    admin = prepare(env)
    server = Gunicorn(env, tmp_path / "logs", workers=2).start()
    try:
        server.wait_all_workers()
        status, _, body = api(server.url, "PATCH", "/api/v1/brokers/mqtt", admin,
                              {"enabled": True, "host": "127.0.0.1", "username": "edge",
                               "password": f"file:{secret}"})
        assert status == 200, body
        assert api(server.url, "POST", "/api/v1/services", admin,
                   {"name": "edge", "protocols": ["mqtt"]})[0] == 201
        own = {"Authorization": "Bearer " + flask(env, "tokens", "create", "edge-token", "--role",
                                                 "service", "--service", "edge")}
        status, headers, text = get(server.url, "/api/v1/services/edge/config", headers=own)
        first = json.loads(text)
        assert first["brokers"]["mqtt"]["password"] == OLD
        etag = headers["ETag"]

        secret.write_text(NEW)                         # rotated; nobody saves
        status, headers, text = get(server.url, "/api/v1/services/edge/config?wait=60", timeout=90,
                                    headers={**own, "If-None-Match": etag})
        assert status == 200, text                      # the held watch woke
        second = json.loads(text)
        assert second["brokers"]["mqtt"]["password"] == NEW
        assert headers["ETag"] != etag and second["version"] > first["version"]
        time.sleep(2.5)                                 # both workers have polled since
        audit = api(server.url, "GET", "/api/v1/audit", admin)[2]
        entries = audit["entries"]
        changed = [e for e in entries if e.get("summary") == f"file {secret} changed"]
        assert len(changed) == 1, entries               # noticed by both workers, saved once
        seen = [api(server.url, "GET", "/api/v1/brokers", admin)[2],
                api(server.url, "GET", "/api/v1/brokers/mqtt", admin)[2], audit,
                api(server.url, "GET", "/api/v1/services/edge/config", admin)[2],
                flask(env, "config", "export"), flask(env, "brokers", "list")]
        shown = json.dumps(seen, default=str)
        assert f"file:{secret}" in shown
        assert OLD not in shown and NEW not in shown
    finally:
        log = server.stop()
    assert f"file {secret} changed" in log
    assert OLD not in log and NEW not in log
    access = server.access_log.read_text()
    assert OLD not in access and NEW not in access
