"""examples/extension_service/service.py as a real process against the real console on real HTTP (with
its delivery worker): command line and environment, registration, the console's signed callbacks and
polling, switching lab listeners without a restart, /status, clean exit on SIGTERM."""
from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.clients.live_console import LiveConsole
from tests.examples.harness import ExampleProcess


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


@pytest.fixture
def mqtt(lab: dict) -> Any:
    """PATCH fields for a lab MQTT listener, with a client id of this test's own."""
    broker = lab["brokers"]["mqtt"]
    client_id = f"example-edge-{uuid.uuid4().hex[:8]}"

    def fields(listener: str = "plain", **extra: Any) -> dict[str, Any]:
        out = {"enabled": True, "host": broker["host"], "port": broker[listener], "client_id": client_id}
        if listener == "plain_auth":
            out.update(username=broker["username"], password=broker["password"])
        return {**out, **extra}

    fields.broker = broker  # type: ignore[attr-defined]
    return fields


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_console_callbacks_switch_listeners_without_a_restart(console: LiveConsole, token, spawn,
                                                                   mqtt) -> None:
    broker = mqtt.broker
    first = console.change("mqtt", **mqtt("plain"))
    service = spawn("--console", console.url, "--token", token, "--service", "edge",
                    "--listen", "127.0.0.1:0", "--protocols", "mqtt,rabbitmq", "--poll-interval", "600").started()
    service.expect(rf"registered edge mqtt,rabbitmq callback=http://127\.0\.0\.1:{service.port}/console-callback")
    service.expect(rf"applied v{first} mqtt 127\.0\.0\.1:{broker['plain']}")
    assert console.wait_ack("edge", first)["status"] == "applied"
    status = service.status()
    assert {k: status[k] for k in ("version", "status", "protocol", "broker", "round_trips", "connected")} == {
        "version": first, "status": "applied", "protocol": "mqtt", "broker": f"127.0.0.1:{broker['plain']}",
        "round_trips": 1, "connected": True}
    pid = service.process.pid

    # a body altered after signing is refused; a well-signed one only makes it fetch (304: nothing new)
    body = json.dumps({"service": "edge", "version": first + 1, "etag": "not-the-etag"}).encode()
    altered = body.replace(b"not-the", b"NOT-the")
    assert console.callback("edge", body=altered, signature=console.sign("edge", body)) == 401
    assert console.callback("edge", body=body) == 204

    # the listener that needs a password: saved on the console, its worker calls back, the service switches
    second = console.change("mqtt", **mqtt("plain_auth"))
    service.expect(rf"applied v{second} mqtt 127\.0\.0\.1:{broker['plain_auth']}")
    assert console.wait_ack("edge", second)["status"] == "applied"
    assert service.status()["broker"] == f"127.0.0.1:{broker['plain_auth']}"
    assert service.status()["round_trips"] == 2
    assert console.service("edge")["rollout"]["delivery"]["state"] == "delivered"

    third = console.change("mqtt", password="wrong-password")
    service.expect(rf"failed v{third} mqtt 127\.0\.0\.1:{broker['plain_auth']}: the broker refused the "
                   rf"connection: Not authorized; still running v{second} on mqtt 127\.0\.0\.1:{broker['plain_auth']}")
    ack = console.wait_ack("edge", third)
    assert ack["status"] == "failed" and "Not authorized" in ack["message"]
    assert (f"edge failed: 127.0.0.1:{broker['plain_auth']}: the broker refused the connection: Not authorized"
            in console.api("GET", "/api/v1/rollout")[1]["text"])
    status = service.status()
    assert (status["version"], status["status"], status["running_version"], status["connected"]) == (
        third, "failed", second, True)

    assert service.process.pid == pid and service.process.poll() is None
    assert service.stop() == 0
    service.expect("stopping on SIGTERM")
    service.expect("stopped")
    assert service.stderr() == ""
    seen = service.output() + json.dumps(status)
    assert token not in seen and broker["password"] not in seen and console.signing_secret("edge") not in seen


def test_polling_only_from_environment_variables(console: LiveConsole, token, spawn, lab, mqtt) -> None:
    rabbit = lab["brokers"]["rabbitmq"]
    first = console.change("rabbitmq", enabled=True, host=rabbit["host"], port=rabbit["plain"],
                           vhost=rabbit["vhost"], username=rabbit["username"], password=rabbit["password"])
    service = spawn(env={"CONSOLE_URL": console.url, "CONSOLE_TOKEN": token, "CONSOLE_SERVICE": "edge",
                         "SERVICE_LISTEN": "127.0.0.1:0", "SERVICE_NO_CALLBACK": "1",
                         "SERVICE_PROTOCOLS": "rabbitmq,mqtt", "SERVICE_POLL_INTERVAL": "0.2"}).started()
    service.expect(r"registered edge rabbitmq,mqtt callback=-")
    service.expect(rf"applied v{first} rabbitmq 127\.0\.0\.1:{rabbit['plain']}")
    assert console.service("edge")["callback_url"] is None and console.signing_secret("edge") is None
    deadline = time.monotonic() + 10
    while 304 not in {r.status for r in console.config_reads("edge")} and time.monotonic() < deadline:
        time.sleep(0.05)
    etag = console.service("edge")["rollout"]["target"]["etag"]
    assert console.config_reads("edge")[-1].headers["if-none-match"] == f'"{etag}"'

    # MQTT enabled too: it comes before RabbitMQ in the console's priorities, the service switches
    second = console.change("mqtt", **mqtt("plain"))
    service.expect(rf"applied v{second} mqtt 127\.0\.0\.1:{mqtt.broker['plain']}")
    assert console.wait_ack("edge", second)["status"] == "applied"
    assert console.service("edge")["rollout"]["delivery"] == {"state": "none"}      # never called back
    assert service.stop() == 0


def test_waits_for_a_console_that_is_not_up_yet(tmp_path: Path, spawn, mqtt) -> None:
    later = LiveConsole(tmp_path / "later")
    token = later.token("edge-token", "edge")
    version = later.change("mqtt", **mqtt("plain"))
    port = _free_port()
    service = spawn("--console", f"http://127.0.0.1:{port}", "--token", token, "--service", "edge",
                    "--listen", "127.0.0.1:0", "--poll-interval", "600").started()
    service.expect(r"console-unavailable: .*Connection refused.*; retrying in 1 s")
    later.start(port)
    try:
        service.expect(r"registered edge mqtt,rabbitmq callback=.*", timeout=30)
        service.expect(rf"applied v{version} mqtt 127\.0\.0\.1:{mqtt.broker['plain']}")
        assert later.wait_ack("edge", version)["status"] == "applied"
        assert service.stop() == 0
    finally:
        later.close()


def test_a_refused_token_exits_1(console: LiveConsole, spawn) -> None:
    service = spawn("--console", console.url, "--token", "revoked", "--service", "edge", "--listen", "127.0.0.1:0")
    service.started()
    service.expect(r"register-refused edge: HTTP 401: The bearer token is not valid\. \(unauthorized\)")
    assert service.process.wait(timeout=20) == 1


def test_a_token_of_another_service_exits_1(console: LiveConsole, spawn) -> None:
    other = console.token("billing-token", "billing")
    service = spawn("--console", console.url, "--token", other, "--service", "edge", "--listen", "127.0.0.1:0")
    service.started()
    service.expect(r"register-refused edge: HTTP 403: This token is for service billing\. \(forbidden\)")
    assert service.process.wait(timeout=20) == 1


def test_missing_options_and_a_busy_port(console: LiveConsole, token, spawn) -> None:
    missing = spawn("--console", console.url, "--service", "edge")
    assert missing.process.wait(timeout=20) == 2
    assert "--token (or its environment variable) is required" in missing.stderr()
    helped = spawn("--help", env={"CONSOLE_TOKEN": "secret-token-in-env"})
    assert helped.process.wait(timeout=20) == 0
    assert "--token TOKEN" in helped.output() and "secret-token-in-env" not in helped.output()
    bad = spawn("--console", console.url, "--token", token, "--service", "edge", "--listen", "8090",
                "--protocols", "kafka")
    assert bad.process.wait(timeout=20) == 2
    assert "expected HOST:PORT, not '8090'" in bad.stderr()
    everywhere = spawn("--console", console.url, "--token", token, "--service", "edge", "--listen", "0.0.0.0:0")
    assert everywhere.process.wait(timeout=20) == 2
    assert "give --callback-url with an address the console can reach" in everywhere.stderr()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = spawn("--console", console.url, "--token", token, "--service", "edge",
                      "--listen", f"127.0.0.1:{busy.getsockname()[1]}")
        taken.expect(r"cannot listen on 127\.0\.0\.1:\d+: Address already in use")
        assert taken.process.wait(timeout=20) == 2
    assert console.requests == []                       # none of them got as far as the console
