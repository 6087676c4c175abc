"""Watches over real HTTP: against gunicorn as `make run` serves it (gunicorn.conf.py: an asyncio
worker, console/serving.py, holds watches on its event loop, so /healthz and the API answer on the
page threads while twenty times as many watches are held; a change wakes them all; stopping the server
ends them at once), and the README's curl loop."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from tests.clients.live_console import LiveConsole, console  # noqa: F401 - the fixture
from tests.clients.test_connecting_docs import README, code_blocks
from tests.conftest import ROOT
from tests.live_gunicorn import Gunicorn, api, flask, get, prepare

WEB_THREADS = 2
HELD = 20 * WEB_THREADS


def _section() -> str:
    text = README.read_text()
    start = text.index("## Running a service that cannot be changed\n")
    return text[start:text.index("\n## ", start + 1)]


def _watch(url: str, token: str, etag: str, wait: int, out: list[Any]) -> threading.Thread:
    def run() -> None:
        started = time.monotonic()
        status, headers, body = get(url, f"/api/v1/services/edge/config?wait={wait}", timeout=wait + 30,
                                    headers={"Authorization": f"Bearer {token}", "If-None-Match": etag})
        out.append((status, headers.get("ETag"), body, time.monotonic() - started))
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "CONSOLE_INSTANCE_PATH": str(tmp_path / "instance"),
            "CONSOLE_CHECK_SCHEDULER": "false"}


def _edge(server: Gunicorn, env: dict[str, str], admin: str) -> tuple[str, str]:
    """MQTT on and service `edge` registered on a started server: edge's own token and its
    document's ETag."""
    server.wait_all_workers()
    assert api(server.url, "PATCH", "/api/v1/brokers/mqtt", admin,
               {"enabled": True, "host": "127.0.0.1"})[0] == 200
    assert api(server.url, "POST", "/api/v1/services", admin,
               {"name": "edge", "protocols": ["mqtt"]})[0] == 201
    own = flask(env, "tokens", "create", "edge-token", "--role", "service", "--service", "edge")
    etag = get(server.url, "/api/v1/services/edge/config",
               headers={"Authorization": f"Bearer {own}"})[1]["ETag"]
    return own, etag


def test_watches_on_gunicorn_leave_the_page_threads_free_and_end_at_shutdown(tmp_path: Path) -> None:
    env = _env(tmp_path)
    admin = prepare(env)
    server = Gunicorn(env, tmp_path / "logs", workers=1, threads=WEB_THREADS).start()
    try:
        own, etag = _edge(server, env, admin)
        held: list[Any] = []
        threads = [_watch(server.url, own, etag, 120, held) for _ in range(HELD)]
        time.sleep(2.0)
        for _ in range(5):      # the page threads still answer while the watches are held
            assert get(server.url, "/healthz", timeout=5)[0] == 200
        assert api(server.url, "PATCH", "/api/v1/brokers/mqtt", admin, {"keepalive": 41})[0] == 200
        for thread in threads:
            thread.join(60)
        assert len(held) == HELD
        for status, new_etag, body, seconds in held:
            assert status == 200 and new_etag != etag and json.loads(body)["brokers"]["mqtt"]["keepalive"] == 41
            assert seconds < 120
        etag = held[0][1]
        ending: list[Any] = []
        last = [_watch(server.url, own, etag, 300, ending) for _ in range(2)]
        time.sleep(1.0)
        stopped = time.monotonic()
        assert server.proc is not None
        os.killpg(server.proc.pid, signal.SIGTERM)
        for thread in last:
            thread.join(30)
        assert [status for status, *_ in ending] == [304, 304]
        server.proc.wait(30)
        assert time.monotonic() - stopped < 15       # gunicorn's graceful timeout (30 s) never ran out
    finally:
        if server.proc is not None and server.proc.poll() is None:
            os.killpg(server.proc.pid, signal.SIGKILL)
    assert "Traceback" not in server.log(), server.log()[-3000:]


def test_the_readme_watch_loop(console: LiveConsole, tmp_path: Path) -> None:  # noqa: F811
    (block,) = [b for b in code_blocks(_section(), "bash") if "?wait=" in b]     # the curl loop
    assert len(block.strip().splitlines()) == 3
    first = console.change("mqtt", enabled=True, host="127.0.0.1", port=1883)
    token = console.token("edge-token", "edge")
    env = {**os.environ, "AUTH": f"Authorization: Bearer {token}", "API": console.url + "/api/v1"}
    api(console.url, "POST", "/api/v1/services", token, {"name": "edge", "protocols": ["mqtt"]})
    shell = subprocess.Popen(["bash", "-c", block], cwd=tmp_path, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    config = tmp_path / "config.json"

    def version() -> int | None:
        try:
            return json.loads(config.read_text())["version"]
        except (OSError, ValueError):
            return None

    try:
        for _ in range(300):
            if version() == first:
                break
            time.sleep(0.05)
        assert version() == first
        second = console.change("mqtt", port=1884)
        for _ in range(300):
            if version() == second:
                break
            time.sleep(0.05)
        assert version() == second and json.loads(config.read_text())["brokers"]["mqtt"]["port"] == 1884
    finally:
        os.killpg(shell.pid, signal.SIGTERM)
        output, _ = shell.communicate(timeout=10)
    assert output.count("new settings ") == 2, output
    assert not (ROOT / "config.json").exists()


def test_a_diagnosis_asked_ends_a_watch_held_by_gunicorn_at_once(tmp_path: Path) -> None:
    """The asynchronous server's held watch (console/serving.py) ends with a 304 naming the request
    when an admin asks the service for a diagnosis; naming it back keeps the next watch held."""
    env = _env(tmp_path)
    admin = prepare(env)
    server = Gunicorn(env, tmp_path / "logs", workers=1, threads=WEB_THREADS).start()
    try:
        own, etag = _edge(server, env, admin)
        ended: list[Any] = []
        started = time.monotonic()
        thread = _watch(server.url, own, etag, 120, ended)
        time.sleep(1.0)
        status, _, asked = api(server.url, "POST", "/api/v1/services/edge/diagnose", admin)
        assert status == 202, asked
        thread.join(60)
        assert ended and ended[0][0] == 304 and time.monotonic() - started < 30
        request = asked["diagnosis_request"]["request"]
        status, headers, _ = get(server.url, "/api/v1/services/edge/config?wait=2", timeout=30, headers={
            "Authorization": f"Bearer {own}", "If-None-Match": etag, "Console-Diagnose-Seen": request})
        assert status == 304 and headers.get("Console-Diagnose") == request
    finally:
        if server.proc is not None and server.proc.poll() is None:
            os.killpg(server.proc.pid, signal.SIGTERM)
            server.proc.wait(30)
    assert "Traceback" not in server.log(), server.log()[-3000:]
