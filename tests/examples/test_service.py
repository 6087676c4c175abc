"""The example service's apply path in-process: real lab brokers, the real client and the real console on
real HTTP (settings saved through its API, then fetched and applied); it switches listeners and
protocols without a restart and acknowledges what it runs. Documents the console never sends (a chosen
protocol without settings, or one the service does not speak) and a refused acknowledgement are canned
in front of the console (LiveConsole.fail_next)."""
from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from console_client import Config, ConsoleClient

from tests.clients.live_console import LiveConsole
from tests.examples.conftest import load_service


@pytest.fixture
def lab_fields(lab: dict, console: LiveConsole) -> Callable[..., dict[str, Any]]:
    """PATCH fields for a lab listener of `protocol` (the lab's CA uploaded for TLS ones), with an MQTT
    client id of this test's own."""
    client_id = f"example-edge-{uuid.uuid4().hex[:8]}"
    uploaded: set[str] = set()

    def build(protocol: str, listener: str = "plain", **extra: Any) -> dict[str, Any]:
        broker = lab["brokers"][protocol]
        fields: dict[str, Any] = {"enabled": True, "host": broker["host"], "port": broker[listener],
                                  "tls": listener.startswith("tls")}
        if protocol == "mqtt":
            fields["client_id"] = client_id
            if listener in ("plain_auth", "tls"):
                fields.update(username=broker["username"], password=broker["password"])
        else:
            fields.update(vhost=broker["vhost"], username=broker["username"], password=broker["password"])
        if fields["tls"] and protocol not in uploaded:
            console.upload(protocol, "tls_ca", Path(lab["certs"]["ca"]).read_bytes())
            uploaded.add(protocol)
        return {**fields, **extra}

    build.lab = lab  # type: ignore[attr-defined]
    return build


@pytest.fixture
def service(console: LiveConsole, token: str) -> Iterator[Any]:
    module = load_service()
    lines: list[str] = []
    client = ConsoleClient(console.url, token, "edge")
    client.register(["mqtt", "rabbitmq"])
    svc = module.ExampleService(client, ["mqtt", "rabbitmq"], out=lines.append)
    svc.lines = lines
    yield svc
    svc.close()


def _eventually(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def _deliver(console: LiveConsole, service: Any, **changes: dict[str, Any]) -> Config:
    """Changes saved on the console (protocol=fields, in order), fetched by the service's client and applied."""
    for protocol, fields in changes.items():
        console.change(protocol, **fields)
    config = service.client.fetch()
    assert config is not None
    service.apply(config)
    return config


def _ack(console: LiveConsole, version: int) -> dict[str, Any]:
    """The console's record of the acknowledgement of `version`: {version, status, message}."""
    ack = console.wait_ack("edge", version)
    return {k: ack[k] for k in ("version", "status", "message")}


def test_mqtt_plain_then_the_password_listener_then_a_wrong_password(console, service, lab_fields) -> None:
    v1 = _deliver(console, service, mqtt=lab_fields("mqtt", "plain")).version
    assert _ack(console, v1) == {"version": v1, "status": "applied",
                                 "message": "connected to mqtt 127.0.0.1:11883; a message went there and back"}
    first = service.connection
    status = service.status()
    assert {k: status[k] for k in ("version", "status", "protocol", "broker", "round_trips", "connected")} == {
        "version": v1, "status": "applied", "protocol": "mqtt", "broker": "127.0.0.1:11883", "round_trips": 1,
        "connected": True}

    v2 = _deliver(console, service, mqtt=lab_fields("mqtt", "plain_auth")).version
    assert _ack(console, v2)["status"] == "applied"
    assert service.connection is not first and _eventually(lambda: not first.connected)
    assert service.connection.broker == "127.0.0.1:11884" and service.connection.round_trip() > 0
    assert service.status()["round_trips"] == 2

    kept = service.connection
    v3 = _deliver(console, service, mqtt={"password": "wrong"}).version
    ack = _ack(console, v3)
    assert ack["status"] == "failed"
    assert ack["message"] == ("127.0.0.1:11884: the broker refused the connection: Not authorized; "
                              f"still running v{v2} on mqtt 127.0.0.1:11884")
    assert service.connection is kept and kept.connected and kept.round_trip() > 0
    status = service.status()
    assert (status["version"], status["status"], status["running_version"], status["broker"]) == (
        v3, "failed", v2, "127.0.0.1:11884")
    assert service.lines == [
        f"applied v{v1} mqtt 127.0.0.1:11883",
        f"applied v{v2} mqtt 127.0.0.1:11884",
        f"failed v{v3} mqtt 127.0.0.1:11884: the broker refused the connection: Not authorized; "
        f"still running v{v2} on mqtt 127.0.0.1:11884",
    ]
    assert console.api("GET", f"/api/v1/rollout?version={v3}")[1]["counts"]["failed"] == 1


def test_mqtt_to_rabbitmq_and_back_over_tls(console, service, lab_fields) -> None:
    config = _deliver(console, service, mqtt=lab_fields("mqtt", "tls"), rabbitmq=lab_fields("rabbitmq", "tls"))
    assert config.protocol == "mqtt" and config.settings["tls_ca"].startswith("-----BEGIN CERTIFICATE-----")
    assert _ack(console, config.version)["status"] == "applied"
    mqtt_connection = service.connection
    assert service.connection.protocol == "mqtt" and service.connection.tls

    config = _deliver(console, service, mqtt={"enabled": False})        # only RabbitMQ is left
    assert _ack(console, config.version)["status"] == "applied"
    assert service.connection.protocol == "rabbitmq" and service.connection.broker == "127.0.0.1:17671"
    assert _eventually(lambda: not mqtt_connection.connected) and service.connection.round_trip() > 0

    config = _deliver(console, service, mqtt={"enabled": True})
    assert _ack(console, config.version)["status"] == "applied"
    assert service.status()["protocol"] == "mqtt" and service.status()["round_trips"] == 3


def test_the_replaced_session_of_the_same_client_id_does_not_take_over_again(console, service,
                                                                            lab_fields) -> None:
    """Both listeners are one Mosquitto: the new session takes the client id over; the old one, closed
    in the background, must not reconnect after paho's 1 s reconnect delay and kick the new one out."""
    _deliver(console, service, mqtt=lab_fields("mqtt", "plain"))
    first = service.connection
    _deliver(console, service, mqtt=lab_fields("mqtt", "plain_auth"))
    second = service.connection
    assert first.client_id == second.client_id and first.client_id.startswith("example-edge-")
    assert _eventually(lambda: not first.client.is_connected())
    watched_until = time.monotonic() + 2.5
    while time.monotonic() < watched_until:
        assert second.connected and not first.client.is_connected()
        time.sleep(0.05)
    assert second.round_trip() > 0


def test_rabbitmq_wrong_password_keeps_the_running_connection(console, service, lab_fields) -> None:
    first = _deliver(console, service, rabbitmq=lab_fields("rabbitmq")).version
    assert _ack(console, first)["status"] == "applied"
    kept = service.connection
    config = _deliver(console, service, rabbitmq={"password": "nope"})
    ack = _ack(console, config.version)
    assert ack["status"] == "failed"
    assert "ProbableAuthenticationError" in ack["message"] and "ACCESS_REFUSED" in ack["message"]
    assert ack["message"].endswith(f"still running v{first} on rabbitmq 127.0.0.1:17672")
    assert service.connection is kept and kept.round_trip() > 0


def test_unchanged_settings_keep_the_connection(console, service, lab_fields) -> None:
    _deliver(console, service, mqtt=lab_fields("mqtt", "plain"))
    connection = service.connection
    config = _deliver(console, service, rabbitmq=lab_fields("rabbitmq"))   # mqtt still comes first
    assert config.protocol == "mqtt" and set(config.brokers) == {"mqtt", "rabbitmq"}
    assert _ack(console, config.version) == {
        "version": config.version, "status": "applied",
        "message": "mqtt settings unchanged; connection to 127.0.0.1:11883 kept"}
    assert service.connection is connection and service.status()["round_trips"] == 1


def _canned(config: Config, **changes: Any) -> tuple[int, bytes, dict[str, str]]:
    """A configuration answer like the console's but with `changes`, and its own ETag."""
    document = {**config.raw, **changes, "version": config.version + 1, "etag": f"canned-{config.version + 1}"}
    return 200, json.dumps(document).encode(), {"Content-Type": "application/json",
                                                "ETag": f'"{document["etag"]}"'}


def test_no_protocol_or_no_settings_is_failed(console, service, lab_fields) -> None:
    config = service.client.fetch()                     # nothing enabled: the console chose nothing
    service.apply(config)
    assert config.protocol is None and _ack(console, config.version) == {
        "version": config.version, "status": "failed",
        "message": "the console chose no protocol for this service: The common protocols (mqtt, rabbitmq) "
                   "are all disabled; enable one of them."}
    running = _deliver(console, service, mqtt=lab_fields("mqtt")).version

    # documents the console never sends, canned in front of it: the service says what is wrong
    console.fail_next.append(_canned(service.client.config, brokers={}))
    service.apply(service.client.fetch())
    assert service.lines[-1] == f"failed v{running + 1} mqtt the console chose mqtt but sent no settings; " \
                                f"still running v{running} on mqtt 127.0.0.1:11883"
    console.fail_next.append(_canned(service.client.config, protocol="kafka",
                                     brokers={"kafka": {"host": "127.0.0.1"}}))
    service.apply(service.client.fetch())
    assert service.lines[-1].endswith("the console chose kafka, which this service does not speak; "
                                      f"still running v{running} on mqtt 127.0.0.1:11883")
    assert service.connection.connected and service.status()["running_version"] == running


def test_an_ack_the_console_refuses_is_reported_once_and_an_outage_is_retried(console, service,
                                                                             lab_fields) -> None:
    version = console.change("mqtt", **lab_fields("mqtt"))
    config = service.client.fetch()
    assert config.version == version
    console.fail_next.append((422, json.dumps({
        "error": "invalid", "message": "The acknowledgement was not recorded.",
        "errors": {"message": "Give the message as text of at most 2000 characters."}}).encode(),
        {"Content-Type": "application/json"}))
    service.apply(config)
    assert service.lines[-1] == (f"ack-failed v{version}: HTTP 422: The acknowledgement was not recorded. "
                                 "message: Give the message as text of at most 2000 characters. (invalid)")
    assert [r.status for r in console.requests if r.path.endswith("/ack")] == [422]

    second = console.change("mqtt", **lab_fields("mqtt", "plain_auth"))
    config = service.client.fetch()
    console.fail_next.append((503, b"", {}))           # a proxy in front, once
    service.apply(config)
    assert _ack(console, second)["status"] == "applied"
    assert [r.status for r in console.requests if r.path.endswith("/ack")] == [422, 503, 200]
    assert service.status()["acked_version"] == second


def test_heartbeat_counts_round_trips_on_the_live_connection(console, token, lab_fields) -> None:
    module = load_service()
    client = ConsoleClient(console.url, token, "edge")
    client.register(["mqtt"])
    svc = module.ExampleService(client, ["mqtt"], heartbeat=0.05, out=lambda _line: None)
    stop = threading.Event()
    beat = threading.Thread(target=svc.beat, args=(stop,))
    try:
        _deliver(console, svc, mqtt=lab_fields("mqtt"))
        beat.start()
        for _ in range(200):
            if svc.status()["round_trips"] >= 4:
                break
            time.sleep(0.05)
        assert svc.status()["round_trips"] >= 4
    finally:
        stop.set()
        if beat.is_alive():
            beat.join(5)
        svc.close()
