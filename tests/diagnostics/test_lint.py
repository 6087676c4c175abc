"""Pitfalls lint: each rule fires on its pitfall and stays quiet on good settings."""
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
    for protocol, values in changes.items():
        result = service.apply_changes(protocol, values, "t")
        assert result.ok, result.errors
    return {(f.protocol, f.field, f.severity) for f in lint(service.effective_all())}


def test_good_settings_have_no_findings(ctx) -> None:
    found = findings(mqtt={"qos": "1", "clean_session": False, "keepalive": 45},
                     kafka={"group_id": "billing", "auto_offset_reset": "earliest"},
                     rabbitmq={"heartbeat": 30, "prefetch": 20, "tls": True, "password": "p2"})
    assert found == set()


@pytest.mark.parametrize("changes,expected", [
    ({"mqtt": {"qos": "1", "clean_session": True}}, ("mqtt", "clean_session", "warning")),
    ({"mqtt": {"qos": "0"}}, ("mqtt", "qos", "warning")),
    ({"mqtt": {"keepalive": 10}}, ("mqtt", "keepalive", "warning")),
    ({"mqtt": {"keepalive": 0}}, ("mqtt", "keepalive", "warning")),
    ({"kafka": {"group_id": ""}}, ("kafka", "group_id", "error")),
    ({"kafka": {"auto_offset_reset": "none"}}, ("kafka", "auto_offset_reset", "warning")),
    ({"kafka": {"auto_offset_reset": "latest"}}, ("kafka", "auto_offset_reset", "info")),
    ({"rabbitmq": {"prefetch": 1000}}, ("rabbitmq", "prefetch", "warning")),
    ({"rabbitmq": {"prefetch": 0}}, ("rabbitmq", "prefetch", "warning")),
    ({"rabbitmq": {"heartbeat": 0}}, ("rabbitmq", "heartbeat", "warning")),
    ({"pulsar": {"subscription_type": "Exclusive", "consumers": 3}}, ("pulsar", "subscription_type", "error")),
    ({"nats": {"token": "t"}}, ("nats", "token", "warning")),
    ({"rabbitmq": {}}, ("rabbitmq", "password", "warning")),
    ({"mqtt": {"tls": True, "tls_verify_hostname": False}}, ("mqtt", "tls_verify_hostname", "warning")),
    ({"mqtt": {"enabled": True, "client_id": "shared"}, "kafka": {"enabled": True, "client_id": "shared"}},
     ("mqtt", "client_id", "warning")),
])
def test_each_pitfall_is_found(ctx, changes, expected) -> None:
    assert expected in findings(**changes)


def test_exclusive_with_one_consumer_is_fine(ctx) -> None:
    assert ("pulsar", "subscription_type", "error") not in findings(
        pulsar={"subscription_type": "Exclusive", "consumers": 1})


def test_expiring_and_expired_certificates(ctx, pki) -> None:
    service.upload_file("nats", "tls_ca", pki["soon.crt"].read_bytes(), filename="soon.crt")
    service.upload_file("mqtt", "tls_ca", pki["expired.crt"].read_bytes(), filename="old.crt")
    found = {(f.protocol, f.field, f.severity): f for f in lint(service.effective_all())}
    assert "days left" in found[("nats", "tls_ca", "warning")].why
    assert ("mqtt", "tls_ca", "error") in found
    ordered = lint(service.effective_all())
    assert ordered[0].severity == "error"
