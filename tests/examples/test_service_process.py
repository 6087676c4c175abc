"""examples/extension_service/service.py as a real process: command line and environment, registration,
signed callbacks and polling, switching lab listeners without a restart, /status, clean exit on SIGTERM.
The console side is the double of tests/clients (the end-to-end tests run it against the real console)."""
from __future__ import annotations

import json
import socket
import time
from typing import Any, Iterator

import pytest

from tests.clients.console_double import ConsoleDouble
from tests.examples.harness import ExampleProcess

TOKEN = "svc-token-edge"


@pytest.fixture
def console() -> Iterator[ConsoleDouble]:
    double = ConsoleDouble({TOKEN: "edge"}).start()
    yield double
    double.stop()


@pytest.fixture
def spawn() -> Iterator[Any]:
    started: list[ExampleProcess] = []

    def run(*args: str, env: dict[str, str] | None = None) -> ExampleProcess:
        service = ExampleProcess(*args, env=env)
        started.append(service)
        return service

    yield run
    for service in started:
        service.kill()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_callbacks_switch_listeners_without_a_restart(console, spawn, mqtt_settings) -> None:
    console.change("mqtt", {"mqtt": mqtt_settings("plain")})
    service = spawn("--console", console.url, "--token", TOKEN, "--service", "edge",
                    "--listen", "127.0.0.1:0", "--protocols", "mqtt,rabbitmq", "--poll-interval", "600").started()
    service.expect(rf"registered edge mqtt,rabbitmq callback=http://127\.0\.0\.1:{service.port}/console-callback")
    service.expect(r"applied v2 mqtt 127\.0\.0\.1:11883")
    assert console.wait_ack(2)["status"] == "applied"
    status = service.status()
    assert {k: status[k] for k in ("version", "status", "protocol", "broker", "round_trips", "connected")} == {
        "version": 2, "status": "applied", "protocol": "mqtt", "broker": "127.0.0.1:11883", "round_trips": 1,
        "connected": True}
    pid = service.process.pid

    console.change("mqtt", {"mqtt": mqtt_settings("plain_auth")})
    body = json.dumps({"service": "edge", "version": 3, "etag": console.etag("edge")}).encode()
    forged = body.replace(b"3", b"4")
    assert console.callback("edge", body=forged, signature=console.signature("edge", body)) == 401
    assert console.callback("edge", body=body) == 204
    service.expect(r"applied v3 mqtt 127\.0\.0\.1:11884")
    assert console.wait_ack(3)["status"] == "applied"
    assert service.status()["broker"] == "127.0.0.1:11884" and service.status()["round_trips"] == 2

    console.change("mqtt", {"mqtt": mqtt_settings("plain_auth", password="wrong")})
    assert console.callback("edge") == 204
    service.expect(r"failed v4 mqtt 127\.0\.0\.1:11884: the broker refused the connection: Not authorized; "
                   r"still running v3 on mqtt 127\.0\.0\.1:11884")
    ack = console.wait_ack(4)
    assert ack["status"] == "failed" and "Not authorized" in ack["message"]
    status = service.status()
    assert (status["version"], status["status"], status["running_version"], status["connected"]) == (
        4, "failed", 3, True)

    assert service.process.pid == pid and service.process.poll() is None
    assert service.stop() == 0
    service.expect("stopping on SIGTERM")
    service.expect("stopped")
    assert service.stderr() == ""
    seen = service.output() + json.dumps(status)
    assert TOKEN not in seen and "labpass" not in seen and console.secrets["edge"] not in seen


def test_polling_only_from_environment_variables(console, spawn, rabbitmq_settings, mqtt_settings) -> None:
    console.change("rabbitmq", {"rabbitmq": rabbitmq_settings()})
    service = spawn(env={"CONSOLE_URL": console.url, "CONSOLE_TOKEN": TOKEN, "CONSOLE_SERVICE": "edge",
                         "SERVICE_LISTEN": "127.0.0.1:0", "SERVICE_NO_CALLBACK": "1",
                         "SERVICE_PROTOCOLS": "rabbitmq,mqtt", "SERVICE_POLL_INTERVAL": "0.2"}).started()
    service.expect(r"registered edge rabbitmq,mqtt callback=-")
    service.expect(r"applied v2 rabbitmq 127\.0\.0\.1:17672")
    assert console.services["edge"]["callback_url"] is None and "edge" not in console.secrets
    deadline = time.monotonic() + 10
    while 304 not in {r.status for r in console.config_reads("edge")} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert console.config_reads("edge")[-1].headers["if-none-match"] == f'"{console.etag("edge")}"'

    console.change("mqtt", {"rabbitmq": rabbitmq_settings(), "mqtt": mqtt_settings("plain")})
    service.expect(r"applied v3 mqtt 127\.0\.0\.1:11883")
    assert console.wait_ack(3)["status"] == "applied"
    assert service.stop() == 0


def test_waits_for_a_console_that_is_not_up_yet(spawn, mqtt_settings) -> None:
    port = _free_port()
    service = spawn("--console", f"http://127.0.0.1:{port}", "--token", TOKEN, "--service", "edge",
                    "--listen", "127.0.0.1:0", "--poll-interval", "600").started()
    service.expect(r"console-unavailable: .*Connection refused.*; retrying in 1 s")
    double = ConsoleDouble({TOKEN: "edge"}, port=port)
    double.change("mqtt", {"mqtt": mqtt_settings()})
    double.start()
    try:
        service.expect(r"registered edge mqtt,rabbitmq callback=.*", timeout=30)
        service.expect(r"applied v2 mqtt 127\.0\.0\.1:11883")
        assert service.stop() == 0
    finally:
        double.stop()


def test_a_refused_token_exits_1(console, spawn) -> None:
    service = spawn("--console", console.url, "--token", "revoked", "--service", "edge", "--listen", "127.0.0.1:0")
    service.started()
    service.expect(r"register-refused edge: HTTP 401: A valid API token is required\. \(unauthorized\)")
    assert service.process.wait(timeout=20) == 1


def test_missing_options_and_a_busy_port(console, spawn) -> None:
    missing = spawn("--console", console.url, "--service", "edge")
    assert missing.process.wait(timeout=20) == 2
    assert "--token (or its environment variable) is required" in missing.stderr()
    helped = spawn("--help", env={"CONSOLE_TOKEN": "secret-token-in-env"})
    assert helped.process.wait(timeout=20) == 0
    assert "--token TOKEN" in helped.output() and "secret-token-in-env" not in helped.output()
    bad = spawn("--console", console.url, "--token", TOKEN, "--service", "edge", "--listen", "8090",
                "--protocols", "kafka")
    assert bad.process.wait(timeout=20) == 2
    assert "expected HOST:PORT, not '8090'" in bad.stderr()
    everywhere = spawn("--console", console.url, "--token", TOKEN, "--service", "edge", "--listen", "0.0.0.0:0")
    assert everywhere.process.wait(timeout=20) == 2
    assert "give --callback-url with an address the console can reach" in everywhere.stderr()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = spawn("--console", console.url, "--token", TOKEN, "--service", "edge",
                      "--listen", f"127.0.0.1:{busy.getsockname()[1]}")
        taken.expect(r"cannot listen on 127\.0\.0\.1:\d+: Address already in use")
        assert taken.process.wait(timeout=20) == 2
