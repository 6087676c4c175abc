"""What a serving process runs beside its requests (console/background.py): `flask run` starts the
background checks like a gunicorn worker does, in the serving process only (with the reloader: its
child, never the parent that watches files), so /readyz leaves `unknown`; nothing of it (no thread
pool, no logger level) happens at import time or for other commands."""
from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import click
import pytest

from tests.conftest import ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(instance: Path, lab: dict, **extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SP_", "CONSOLE_", "FLASK_"))}
    return {**clean, "CONSOLE_INSTANCE_PATH": str(instance), "CONSOLE_CHECK_INTERVAL": "1",
            "CONSOLE_CHECK_TIMEOUT": "2", "SP_NATS_ENABLED": "true", "SP_NATS_HOST": "127.0.0.1",
            "SP_NATS_PORT": str(lab["brokers"]["nats"]["plain"]), **extra}


def _readyz(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return json.loads(error.read())
    except OSError:
        return None


def _serve_until_checked(tmp_path: Path, lab: dict, *flags: str) -> tuple[dict, set[int], int]:
    """`flask --app app run` with `flags` until /readyz names NATS up (15 s at most); the last answer,
    the process ids that held a check lease, and the id of the process started."""
    instance = tmp_path / "instance"
    env = _env(instance, lab)
    subprocess.run([sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"], cwd=ROOT, env=env,
                   check=True, capture_output=True, timeout=120)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "run", "--port", str(port),
                               *flags], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    body: dict | None = None
    try:
        end = time.monotonic() + 15
        while time.monotonic() < end:
            body = _readyz(port)
            if body and body["brokers"]["nats"]["status"] == "up":
                break
            time.sleep(0.2)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        _, err = server.communicate(timeout=30)
    assert body is not None, err.decode()[-2000:]
    with sqlite3.connect(instance / "console.db") as conn:
        holders = {row[0] for row in conn.execute("SELECT holder FROM check_leases WHERE holder IS NOT NULL")}
    return body, {int(holder.split(":")[1]) for holder in holders}, server.pid


def test_flask_run_runs_the_background_checks(tmp_path: Path, lab: dict) -> None:
    body, pids, started = _serve_until_checked(tmp_path, lab)
    assert body["brokers"]["nats"]["status"] == "up", body
    assert body["brokers"]["nats"]["latency_ms"] is not None
    assert pids == {started}


def test_flask_run_with_the_reloader_checks_in_the_serving_child_only(tmp_path: Path, lab: dict) -> None:
    body, pids, parent = _serve_until_checked(tmp_path, lab, "--debug")
    assert body["brokers"]["nats"]["status"] == "up", body
    assert len(pids) == 1 and parent not in pids, (pids, parent)


PROBE = """
import json, logging, threading
import console.brokers.kafka, console.brokers.mqtt, console.brokers.nats, console.brokers.pulsar
import console.brokers.rabbitmq
from console import background, checks, create_app
app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://"})
with app.test_request_context("/"):
    flask_run = background.serving_with_flask_run()
print(json.dumps({
    "pika": logging.getLogger("pika").level, "asyncio": len(logging.getLogger("asyncio").filters),
    "dns_pool": 0 if checks._DNS_POOL is None else 1, "threads": sorted(t.name for t in threading.enumerate()),
    "extensions": sorted(k for k in app.extensions if k.startswith("console_")), "flask_run": flask_run}))
"""


def test_importing_sets_no_logger_level_and_starts_no_pool(tmp_path: Path) -> None:
    """Importing the console and every driver, and building an app, leaves logging as it was, makes no
    thread pool and starts nothing in the background."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SP_", "CONSOLE_", "FLASK_"))}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**clean, "CONSOLE_INSTANCE_PATH": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"pika": 0, "asyncio": 0, "dns_pool": 0, "threads": ["MainThread"], "extensions": [],
                    "flask_run": False}


@pytest.mark.parametrize("command,params,from_reloader,serves", [
    ("run", {"reload": False}, False, True),
    ("run", {"reload": None}, False, True),
    ("run", {"reload": True}, False, False),
    ("run", {"reload": True}, True, True),
    ("brokers", {}, False, False),
    ("routes", {}, True, False),
])
def test_only_the_serving_flask_run_process_starts_them(monkeypatch: pytest.MonkeyPatch, command: str,
                                                       params: dict, from_reloader: bool, serves: bool) -> None:
    from flask.cli import run_command

    from console import background

    monkeypatch.delenv("FLASK_DEBUG", raising=False)
    if from_reloader:
        monkeypatch.setenv("WERKZEUG_RUN_MAIN", "true")
    else:
        monkeypatch.delenv("WERKZEUG_RUN_MAIN", raising=False)
    assert background.serving_with_flask_run() is False
    chosen = run_command if command == "run" else click.Command(command)
    with click.Context(chosen, info_name=command) as ctx:
        ctx.params.update(params)
        assert background.serving_with_flask_run() is serves
