"""End to end: the console serving on real HTTP with its delivery worker, the example extension
service as a real process, and the lab's real Mosquitto. A change on the page reaches the service by
a signed callback; the service fetches, reconnects, really publishes and receives on the new settings
and acknowledges; the page shows it applied — or failed, with the broker's reason."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from werkzeug.serving import make_server

from console.delivery import outbox
from tests.conftest import ADMIN_PASSWORD, add_user, login, make_app, make_token

from .receiver import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "extension_service" / "service.py"


@pytest.fixture
def console(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The console on http://127.0.0.1:<port> with its outbox worker, and an admin page client."""
    app = make_app(tmp_path / "instance", DELIVERY_POLL_SECONDS=0.2, DELIVERY_RETRY_BASE=0.2,
                   DELIVERY_RETRY_MAX=1.0)
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    worker = outbox.start(app)
    add_user(app, "admin", "admin", ADMIN_PASSWORD)
    page = login(app.test_client(), "admin", ADMIN_PASSWORD)
    try:
        yield {"app": app, "url": f"http://127.0.0.1:{server.server_port}", "page": page}
    finally:
        worker.stop()
        server.shutdown()


class Service:
    """examples/extension_service/service.py as a child process."""

    def __init__(self, console_url: str, token: str) -> None:
        self.port = free_port()
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--console", console_url, "--token", token,
             "--service", "edge", "--listen", f"127.0.0.1:{self.port}", "--protocols", "mqtt",
             "--poll-interval", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/status", timeout=2) as r:
            return json.load(r)

    def wait(self, predicate, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                last = self.status()
                if predicate(last):
                    return last
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"service did not get there: {last}; output: {self.lines}")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(10)


def _save_mqtt(page, **fields) -> Any:
    return page.post("/settings/messaging/mqtt", data=fields, headers={"HX-Request": "true"})


def _version(html: str) -> int:
    return int(re.search(r"applied v(\d+)|of \d+ services? applied v(\d+)", html).group(
        0).rsplit("v", 1)[1])


def test_a_page_change_reaches_the_running_service_without_a_restart(console, lab) -> None:
    mqtt = lab["brokers"]["mqtt"]
    page, app = console["page"], console["app"]
    assert _save_mqtt(page, enabled="true", host="127.0.0.1", port=str(mqtt["plain"])).status_code == 200
    service = Service(console["url"], make_token(app, "edge-token", "service", "edge"))
    try:
        first = service.wait(lambda s: s["status"] == "applied")
        assert first["broker"] == f"127.0.0.1:{mqtt['plain']}" and first["round_trips"] >= 1
        pid = service.process.pid

        # the listener that requires a password, with the password: switched over, acknowledged
        response = _save_mqtt(page, host="127.0.0.1", port=str(mqtt["plain_auth"]),
                              username=mqtt["username"], password=mqtt["password"])
        html = response.get_data(as_text=True)
        assert response.status_code == 200 and "Roll-out" in html, html[:2000]
        second = service.wait(lambda s: s["status"] == "applied" and s["version"] != first["version"])
        assert second["broker"] == f"127.0.0.1:{mqtt['plain_auth']}"
        assert second["round_trips"] > first["round_trips"]          # really published and received
        assert service.process.pid == pid and service.process.poll() is None   # no restart
        rollout = page.get(f"/adapters/rollout?version={second['version']}",
                           headers={"HX-Request": "true"}).get_data(as_text=True)
        assert f"1 of 1 service applied v{second['version']}" in rollout
        assert f"applied v{second['version']}" in page.get("/adapters").get_data(as_text=True)

        # a wrong password: the guard's failed test asks for "save anyway"; then the service
        # acknowledges failed with the broker's reason, shown on the page
        refused = _save_mqtt(page, password="wrong-password")
        assert refused.status_code == 409 and "Save anyway" in refused.get_data(as_text=True)
        saved = _save_mqtt(page, password="wrong-password", save_anyway="1")
        assert saved.status_code == 200
        third = service.wait(lambda s: s["status"] == "failed")
        assert re.search(r"[Nn]ot authori[sz]ed|[Bb]ad user name or password", third["message"])
        html = page.get("/adapters").get_data(as_text=True)
        assert "failed v" in html and third["message"].split(";")[0] in html
        text = page.get("/api/v1/rollout").get_json()["text"]
        assert "edge failed:" in text
    finally:
        assert service.stop() == 0
