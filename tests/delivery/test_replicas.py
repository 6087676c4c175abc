"""Two console instances (two gunicorn masters, two workers each) on one PostgreSQL: every callback
is made exactly once, whichever instance committed the change."""
from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import sqlalchemy as sa

from tests.live_gunicorn import pg_database as _pg_database

from .receiver import Receiver, free_port

ROOT = Path(__file__).resolve().parents[2]
SERVICES = 20


def _call(base: str, method: str, path: str, token: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        base + path, method=method, data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _wait_healthy(base: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{base} did not come up")


def test_two_instances_deliver_every_callback_exactly_once(tmp_path: Path) -> None:
    url = _pg_database("console_delivery_replicas")
    env = {**os.environ, "CONSOLE_DATABASE_URL": url, "CONSOLE_INSTANCE_PATH": str(tmp_path),
           "CONSOLE_CHECK_SCHEDULER": "false", "CONSOLE_WORKERS": "2",
           "CONSOLE_DELIVERY_POLL_SECONDS": "0.2"}
    flask = [sys.executable, "-m", "flask", "--app", "app"]
    subprocess.run([*flask, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True,
                   timeout=120)
    token = subprocess.run([*flask, "tokens", "create", "robot", "--role", "admin"], cwd=ROOT,
                           env=env, check=True, capture_output=True, text=True,
                           timeout=60).stdout.strip()
    receiver = Receiver().start()
    bases, servers = [], []
    try:
        for _ in range(2):
            port = free_port()
            servers.append(subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "app:app"],
                cwd=ROOT, env={**env, "CONSOLE_BIND": f"127.0.0.1:{port}"},
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True))
            bases.append(f"http://127.0.0.1:{port}")
        for base in bases:
            _wait_healthy(base)
        for i in range(SERVICES):
            name = f"svc-{i:02d}"
            answer = _call(bases[i % 2], "POST", "/api/v1/services", token, {
                "name": name, "protocols": ["mqtt"], "callback_url": receiver.url(f"/{name}")})
            receiver.secrets[name] = answer["signing_secret"]
        versions = []
        for n in range(6):
            answer = _call(bases[n % 2], "PATCH", "/api/v1/brokers/mqtt", token,
                           {"enabled": True, "host": f"mqtt-{n}.example"})
            versions.append(answer["version"])
            time.sleep(0.15)
        final = versions[-1]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            got = {c["json"]["service"] for c in receiver.calls if c["json"]["version"] == final}
            if len(got) == SERVICES:
                break
            time.sleep(0.1)
        time.sleep(1.0)      # anything duplicated would arrive now
    finally:
        for server in servers:
            os.killpg(server.pid, signal.SIGTERM)
        errors = [server.communicate(timeout=30)[1].decode() for server in servers]
        receiver.stop()
    calls = receiver.calls
    assert all(c["valid"] for c in calls)
    per = collections.Counter((c["json"]["service"], c["json"]["version"]) for c in calls)
    assert max(per.values()) == 1, [k for k, v in per.items() if v > 1]
    assert {s for s, v in per if v == final} == {f"svc-{i:02d}" for i in range(SERVICES)}, errors
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        delivered = conn.execute(sa.text(
            "SELECT count(*) FROM deliveries WHERE state = 'delivered'")).scalar()
        holders = conn.execute(sa.text(
            "SELECT count(DISTINCT split_part(claimed_by, ':', 2)) FROM deliveries "
            "WHERE state = 'delivered'")).scalar()
    engine.dispose()
    assert delivered == len(calls)
    assert holders >= 2, "both instances should have delivered some"
