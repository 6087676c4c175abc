"""The example service's apply path in-process: real lab brokers, the real client against a console double;
it switches listeners and protocols without a restart and acknowledges what it runs."""
from __future__ import annotations

import threading
import time
from typing import Any, Iterator

import pytest

from console_client import Config, ConsoleClient
from tests.clients.console_double import ConsoleDouble
from tests.examples.conftest import load_service

TOKEN = "svc-token-edge"


@pytest.fixture
def console() -> Iterator[ConsoleDouble]:
    double = ConsoleDouble({TOKEN: "edge"}).start()
    yield double
    double.stop()


@pytest.fixture
def service(console: ConsoleDouble) -> Iterator[Any]:
    module = load_service()
    lines: list[str] = []
    svc = module.ExampleService(ConsoleClient(console.url, TOKEN, "edge"), ["mqtt", "rabbitmq"],
                                out=lines.append)
    svc.lines = lines
    yield svc
    svc.close()


def _eventually(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def _deliver(console: ConsoleDouble, service: Any, protocol: str | None, brokers: dict[str, Any]) -> Config:
    """A change on the console, fetched by the service's client and applied."""
    console.change(protocol, brokers)
    config = service.client.fetch()
    assert config is not None
    service.apply(config)
    return config


def test_mqtt_plain_then_the_password_listener_then_a_wrong_password(console, service, mqtt_settings) -> None:
    v2 = _deliver(console, service, "mqtt", {"mqtt": mqtt_settings("plain")})
    assert console.wait_ack(v2.version) == {"version": 2, "status": "applied",
                                            "message": "connected to mqtt 127.0.0.1:11883; a message went "
                                                       "there and back"}
    first = service.connection
    status = service.status()
    assert {k: status[k] for k in ("version", "status", "protocol", "broker", "round_trips", "connected")} == {
        "version": 2, "status": "applied", "protocol": "mqtt", "broker": "127.0.0.1:11883", "round_trips": 1,
        "connected": True}

    v3 = _deliver(console, service, "mqtt", {"mqtt": mqtt_settings("plain_auth")})
    assert console.wait_ack(v3.version)["status"] == "applied"
    assert service.connection is not first and _eventually(lambda: not first.connected)
    assert service.connection.broker == "127.0.0.1:11884" and service.connection.round_trip() > 0
    assert service.status()["round_trips"] == 2

    kept = service.connection
    v4 = _deliver(console, service, "mqtt", {"mqtt": mqtt_settings("plain_auth", password="wrong")})
    ack = console.wait_ack(v4.version)
    assert ack["status"] == "failed"
    assert ack["message"] == ("127.0.0.1:11884: the broker refused the connection: Not authorized; "
                              "still running v3 on mqtt 127.0.0.1:11884")
    assert service.connection is kept and kept.connected and kept.round_trip() > 0
    status = service.status()
    assert (status["version"], status["status"], status["running_version"], status["broker"]) == (
        4, "failed", 3, "127.0.0.1:11884")
    assert service.lines == [
        "applied v2 mqtt 127.0.0.1:11883",
        "applied v3 mqtt 127.0.0.1:11884",
        "failed v4 mqtt 127.0.0.1:11884: the broker refused the connection: Not authorized; "
        "still running v3 on mqtt 127.0.0.1:11884",
    ]


def test_mqtt_to_rabbitmq_and_back_over_tls(console, service, mqtt_settings, rabbitmq_settings) -> None:
    brokers = {"mqtt": mqtt_settings("tls"), "rabbitmq": rabbitmq_settings("tls")}
    assert console.wait_ack(_deliver(console, service, "mqtt", brokers).version)["status"] == "applied"
    mqtt_connection = service.connection
    assert service.connection.protocol == "mqtt" and service.connection.tls

    assert console.wait_ack(_deliver(console, service, "rabbitmq", brokers).version)["status"] == "applied"
    assert service.connection.protocol == "rabbitmq" and service.connection.broker == "127.0.0.1:17671"
    assert _eventually(lambda: not mqtt_connection.connected) and service.connection.round_trip() > 0

    assert console.wait_ack(_deliver(console, service, "mqtt", brokers).version)["status"] == "applied"
    assert service.status()["protocol"] == "mqtt" and service.status()["round_trips"] == 3


def test_the_replaced_session_of_the_same_client_id_does_not_take_over_again(console, service,
                                                                            mqtt_settings) -> None:
    """Both listeners are one Mosquitto: the new session takes the client id over; the old one, closed
    in the background, must not reconnect after paho's 1 s reconnect delay and kick the new one out."""
    _deliver(console, service, "mqtt", {"mqtt": mqtt_settings("plain")})
    first = service.connection
    _deliver(console, service, "mqtt", {"mqtt": mqtt_settings("plain_auth")})
    second = service.connection
    assert first.client_id == second.client_id == "example-edge"
    assert _eventually(lambda: not first.client.is_connected())
    watched_until = time.monotonic() + 2.5
    while time.monotonic() < watched_until:
        assert second.connected and not first.client.is_connected()
        time.sleep(0.05)
    assert second.round_trip() > 0


def test_rabbitmq_wrong_password_keeps_the_running_connection(console, service, rabbitmq_settings) -> None:
    assert console.wait_ack(_deliver(console, service, "rabbitmq",
                                     {"rabbitmq": rabbitmq_settings()}).version)["status"] == "applied"
    kept = service.connection
    config = _deliver(console, service, "rabbitmq", {"rabbitmq": rabbitmq_settings(password="nope")})
    ack = console.wait_ack(config.version)
    assert ack["status"] == "failed"
    assert "ProbableAuthenticationError" in ack["message"] and "ACCESS_REFUSED" in ack["message"]
    assert ack["message"].endswith("still running v2 on rabbitmq 127.0.0.1:17672")
    assert service.connection is kept and kept.round_trip() > 0


def test_unchanged_settings_keep_the_connection(console, service, mqtt_settings, rabbitmq_settings) -> None:
    settings = mqtt_settings("plain")
    _deliver(console, service, "mqtt", {"mqtt": settings})
    connection = service.connection
    config = _deliver(console, service, "mqtt", {"mqtt": settings, "rabbitmq": rabbitmq_settings()})
    assert console.wait_ack(config.version) == {
        "version": 3, "status": "applied",
        "message": "mqtt settings unchanged; connection to 127.0.0.1:11883 kept"}
    assert service.connection is connection and service.status()["round_trips"] == 1


def test_no_protocol_or_no_settings_is_failed(console, service, mqtt_settings) -> None:
    config = _deliver(console, service, None, {})
    assert console.wait_ack(config.version) == {
        "version": 2, "status": "failed",
        "message": "the console chose no protocol for this service: none of mqtt, rabbitmq is enabled"}
    config = _deliver(console, service, "mqtt", {})
    assert console.wait_ack(config.version)["message"] == "the console chose mqtt but sent no settings"
    _deliver(console, service, "mqtt", {"mqtt": mqtt_settings()})
    config = _deliver(console, service, "kafka", {"kafka": {"host": "127.0.0.1"}})
    assert console.wait_ack(config.version)["message"] == (
        "the console chose kafka, which this service does not speak; still running v4 on mqtt 127.0.0.1:11883")


def test_an_ack_the_console_refuses_is_reported_once_and_an_outage_is_retried(console, service,
                                                                             mqtt_settings) -> None:
    console.change("mqtt", {"mqtt": mqtt_settings()})
    config = service.client.fetch()
    console.fail_next.append((400, b'{"error": "invalid", "message": "message too long"}', {}))
    service.apply(config)
    assert service.lines[-1] == "ack-failed v2: HTTP 400: message too long (invalid)"
    assert [r.status for r in console.requests if r.path.endswith("/ack")] == [400]

    console.change("mqtt", {"mqtt": mqtt_settings("plain_auth")})
    config = service.client.fetch()
    console.fail_next.append((503, b"", {}))
    service.apply(config)
    assert console.wait_ack(config.version)["status"] == "applied"
    assert [r.status for r in console.requests if r.path.endswith("/ack")] == [400, 503, 200]
    assert service.status()["acked_version"] == 3


def test_heartbeat_counts_round_trips_on_the_live_connection(console, mqtt_settings) -> None:
    module = load_service()
    svc = module.ExampleService(ConsoleClient(console.url, TOKEN, "edge"), ["mqtt"], heartbeat=0.05,
                                out=lambda _line: None)
    stop = threading.Event()
    beat = threading.Thread(target=svc.beat, args=(stop,))
    try:
        _deliver(console, svc, "mqtt", {"mqtt": mqtt_settings()})
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
