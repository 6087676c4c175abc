"""Pitfalls lint: each rule fires on its pitfall and stays quiet on good settings. One rule (issue
18 item 8): only enabled protocols are linted, and a pitfall is reported only when the operator's own
values create it — a fresh install, and the console's defaults, show none."""
from __future__ import annotations

import pytest
from flask import Flask

from console.diagnostics.lint import lint
from console.settings import service


@pytest.fixture
def ctx(app: Flask):
    with app.app_context():
        yield


def findings(**changes) -> set[tuple[str, str, str]]:
    """The findings after enabling each protocol named and saving its values."""
    for protocol, values in changes.items():
        result = service.apply_changes(protocol, {"enabled": True, **values}, "t", confirm=True)
        assert result.ok, result.errors
    return {(f.protocol, f.field, f.severity) for f in lint(service.effective_all())}


def test_good_settings_have_no_findings(ctx) -> None:
    found = findings(mqtt={"qos": "1", "clean_session": False, "keepalive": 45},
                     kafka={"group_id": "billing", "auto_offset_reset": "earliest"},
                     rabbitmq={"heartbeat": 30, "prefetch": 20, "tls": True, "password": "p2"})
    assert found == set()


@pytest.mark.parametrize("changes,expected", [
    ({"mqtt": {"qos": "2", "clean_session": True}}, ("mqtt", "clean_session", "warning")),
    ({"mqtt": {"qos": "0"}}, ("mqtt", "qos", "warning")),
    ({"mqtt": {"keepalive": 10}}, ("mqtt", "keepalive", "warning")),
    ({"mqtt": {"keepalive": 0}}, ("mqtt", "keepalive", "warning")),
    ({"kafka": {"group_id": ""}}, ("kafka", "group_id", "error")),
    ({"kafka": {"auto_offset_reset": "none"}}, ("kafka", "auto_offset_reset", "warning")),
    ({"rabbitmq": {"prefetch": 1000}}, ("rabbitmq", "prefetch", "warning")),
    ({"rabbitmq": {"prefetch": 0}}, ("rabbitmq", "prefetch", "warning")),
    ({"rabbitmq": {"heartbeat": 0}}, ("rabbitmq", "heartbeat", "warning")),
    ({"pulsar": {"subscription_type": "Exclusive", "consumers": 3}}, ("pulsar", "subscription_type", "error")),
    ({"nats": {"token": "t"}}, ("nats", "token", "warning")),
    ({"rabbitmq": {"username": "svc"}}, ("rabbitmq", "password", "warning")),
    ({"rabbitmq": {"password": "p2"}}, ("rabbitmq", "password", "warning")),
    ({"mqtt": {"qos": "2"}}, ("mqtt", "clean_session", "warning")),
    ({"mqtt": {"client_id": "edge-1"}, "nats": {"name": "edge-1"}}, ("mqtt", "client_id", "warning")),
    ({"mqtt": {"tls": True, "tls_verify_hostname": False}}, ("mqtt", "tls_verify_hostname", "warning")),
    ({"mqtt": {"client_id": "shared"}, "kafka": {"client_id": "shared"}},
     ("mqtt", "client_id", "warning")),
])
def test_each_pitfall_is_found(ctx, changes, expected) -> None:
    assert expected in findings(**changes)


def test_exclusive_with_one_consumer_is_fine(ctx) -> None:
    assert ("pulsar", "subscription_type", "error") not in findings(
        pulsar={"subscription_type": "Exclusive", "consumers": 1})


def test_a_fresh_install_has_no_findings(app: Flask, admin_client) -> None:
    with app.app_context():
        assert lint(service.effective_all()) == []
    assert admin_client.get("/api/v1/lint").get_json() == {"findings": []}
    assert "No pitfalls found." in admin_client.get("/certificates").get_data(as_text=True)


def test_the_consoles_defaults_are_no_pitfall(ctx) -> None:
    """Every protocol enabled, nothing else changed: clean session with QoS 1, the one default
    client name of MQTT, NATS, Kafka and Pulsar, latest with the default group, guest/guest."""
    assert findings(**{p: {} for p in ("kafka", "mqtt", "nats", "pulsar", "rabbitmq")}) == set()


def test_a_disabled_protocol_is_not_linted(ctx) -> None:
    pitfalls = {"mqtt": {"qos": "0", "keepalive": 5, "client_id": "same"},
                "kafka": {"group_id": "", "client_id": "same"},
                "rabbitmq": {"prefetch": 0, "heartbeat": 0, "password": "p2"}}
    for protocol, values in pitfalls.items():
        assert service.apply_changes(protocol, {**values, "enabled": False}, "t").ok
    assert lint(service.effective_all()) == []
    assert service.apply_changes("mqtt", {"enabled": True}, "t", confirm=True).ok
    assert {(f.protocol, f.field) for f in lint(service.effective_all())} == {
        ("mqtt", "qos"), ("mqtt", "keepalive")}       # Kafka, which shares the id, is off


@pytest.mark.parametrize("variable,value,expected", [
    ("SP_MQTT_QOS", "2", ("mqtt", "clean_session", "warning")),
    ("SP_MQTT_CLEAN_SESSION", "true", ("mqtt", "clean_session", "warning")),
    ("SP_KAFKA_AUTO_OFFSET_RESET", "latest", ("kafka", "auto_offset_reset", "info")),
    ("SP_RABBITMQ_USERNAME", "svc", ("rabbitmq", "password", "warning")),
])
def test_an_environment_value_is_the_operators(ctx, monkeypatch, variable, value, expected) -> None:
    """A value equal to the default is not saved (it is the default); from the environment it is
    the operator's own."""
    protocol = expected[0]
    assert expected not in findings(**{protocol: {}})
    monkeypatch.setenv(variable, value)
    assert expected in findings(**{protocol: {}})


def test_expiring_and_expired_certificates(ctx, pki) -> None:
    for protocol in ("nats", "mqtt"):
        assert service.apply_changes(protocol, {"enabled": True}, "t", confirm=True).ok
    service.upload_file("nats", "tls_ca", pki["soon.crt"].read_bytes(), filename="soon.crt")
    service.upload_file("mqtt", "tls_ca", pki["expired.crt"].read_bytes(), filename="old.crt")
    found = {(f.protocol, f.field, f.severity): f for f in lint(service.effective_all())}
    assert "days left" in found[("nats", "tls_ca", "warning")].why
    assert ("mqtt", "tls_ca", "error") in found
    ordered = lint(service.effective_all())
    assert ordered[0].severity == "error"
