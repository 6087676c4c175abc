"""The checks layer: leases, cached results, /readyz, /metrics, DNS first, TLS material on disk."""
from __future__ import annotations

import datetime as dt
import os
import socket
from pathlib import Path

import pytest
from flask import Flask

from console import checks
from console.brokers.base import CheckResult
from console.extensions import db
from console.models import BrokerCheck, utcnow
from console.settings import service


@pytest.fixture
def ctx(app: Flask):
    with app.app_context():
        yield app


def store(protocol: str, status: str = "up", cause: str = "ok", ago: float = 0.0,
          latency: float | None = 3.0) -> None:
    result = CheckResult(protocol, status, latency, cause, "msg", {"target": "t"},
                         utcnow() - dt.timedelta(seconds=ago))
    checks.record(result, "test")


def test_claim_is_exclusive_per_interval(ctx) -> None:
    now = utcnow()
    assert checks.claim("mqtt", 30, "worker-a", now) is True
    assert checks.claim("mqtt", 30, "worker-b", now) is False
    assert checks.claim("mqtt", 30, "worker-b", now + dt.timedelta(seconds=29)) is False
    assert checks.claim("mqtt", 30, "worker-b", now + dt.timedelta(seconds=31)) is True
    assert checks.claim("nats", 30, "worker-a", now) is True


def test_history_is_pruned(ctx, monkeypatch) -> None:
    monkeypatch.setattr(checks, "HISTORY_KEEP", 5)
    for _ in range(8):
        store("nats")
    assert db.session.execute(db.select(db.func.count(BrokerCheck.id))).scalar() == 5
    assert len(checks.history("nats", 30)) == 5


def test_readyz_states(app: Flask, client) -> None:
    body = client.get("/readyz")
    assert body.status_code == 200 and body.get_json()["status"] == "ok"
    assert body.get_json()["brokers"]["kafka"] == {"status": "disabled"}
    with app.app_context():
        service.apply_changes("mqtt", {"enabled": True}, "t")
        service.apply_changes("nats", {"enabled": True}, "t")
    unknown = client.get("/readyz")
    assert unknown.status_code == 503
    assert unknown.get_json()["brokers"]["mqtt"]["status"] == "unknown"
    with app.app_context():
        store("mqtt")
        store("nats", "down", "connection_refused", latency=None)
    down = client.get("/readyz").get_json()
    assert down["status"] == "down" and down["brokers"]["nats"]["cause"] == "connection_refused"
    assert down["brokers"]["mqtt"] == {"status": "up", "latency_ms": 3.0, "cause": None,
                                       "checked_at": down["brokers"]["mqtt"]["checked_at"]}
    app.config["READY_REQUIRED"] = "mqtt"
    degraded = client.get("/readyz")
    assert degraded.status_code == 200 and degraded.get_json()["status"] == "degraded"
    with app.app_context():
        store("nats")
    assert client.get("/readyz").get_json()["status"] == "ok"


def test_readyz_old_result_is_unknown(app: Flask, client) -> None:
    with app.app_context():
        service.apply_changes("mqtt", {"enabled": True}, "t")
        store("mqtt", ago=3600)
    body = client.get("/readyz")
    assert body.status_code == 503
    assert body.get_json()["brokers"]["mqtt"]["status"] == "unknown"
    assert body.get_json()["brokers"]["mqtt"]["stale"] is True


def test_readyz_opens_no_connection(app: Flask, client, monkeypatch) -> None:
    with app.app_context():
        service.apply_changes("rabbitmq", {"enabled": True, "password": "pw-xyz"}, "t")
        store("rabbitmq")
    client.get("/readyz")
    attempts: list[object] = []
    real_connect = socket.socket.connect

    def spy(self, address):
        attempts.append(address)
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", spy)
    monkeypatch.setattr(socket.socket, "connect_ex", spy)
    monkeypatch.setattr(checks, "check_settings", lambda *a, **k: pytest.fail("checked"))
    for _ in range(20):
        response = client.get("/readyz")
        assert response.status_code == 200
    assert attempts == []
    assert "pw-xyz" not in response.get_data(as_text=True)


def test_healthz_does_no_broker_io(client) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_metrics(app: Flask, client, pki) -> None:
    with app.app_context():
        service.apply_changes("mqtt", {"enabled": True}, "t")
        store("mqtt", latency=12.5)
        store("kafka", "down", "connection_refused", latency=None)
        service.upload_file("mqtt", "tls_ca", pki["soon.crt"].read_bytes(), filename="soon.crt")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'messaging_broker_up{protocol="mqtt"} 1.0' in text
    assert 'messaging_broker_up{protocol="kafka"} 0.0' in text
    assert 'messaging_broker_check_latency_seconds{protocol="mqtt"} 0.0125' in text
    assert 'messaging_broker_enabled{protocol="mqtt"} 1.0' in text
    line = next(l for l in text.splitlines()
                if l.startswith("messaging_certificate_expiry_timestamp_seconds{"))
    assert 'protocol="mqtt"' in line and 'source="tls_ca"' in line
    expiry = float(line.rsplit(" ", 1)[1])
    assert 9 * 86400 < expiry - utcnow().timestamp() < 11 * 86400


def test_dns_failure_stops_before_the_client_library(ctx, monkeypatch) -> None:
    def resolver(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr("console.checks.get_driver", lambda p: pytest.fail("client library called"))
    service.apply_changes("nats", {"host": "broker.invalid"}, "t")
    result = checks.check_settings(service.effective("nats", reveal=True), 2, resolver)
    assert (result.status, result.cause) == ("down", "dns_failure")
    assert "broker.invalid does not resolve: Name or service not known" in result.message


def test_slow_resolver_is_bounded_by_the_deadline(ctx) -> None:
    import time

    def slow(host: str, port: int) -> list[str]:
        time.sleep(1.0)
        return ["127.0.0.1"]

    started = time.monotonic()
    _, error = checks.resolve_hosts((("slow.example", 1),), 0.3, slow)
    assert time.monotonic() - started < 0.5 and "took longer" in error


def test_ip_literals_are_not_resolved(ctx) -> None:
    found, error = checks.resolve_hosts((("127.0.0.1", 1), ("::1", 2)), 1,
                                        lambda h, p: pytest.fail("resolved"))
    assert error is None and found == {"127.0.0.1": ["127.0.0.1"], "::1": ["::1"]}


def test_broker_config_writes_private_tls_files_and_removes_them(ctx, pki) -> None:
    service.upload_file("mqtt", "tls_ca", pki["ca.crt"].read_bytes(), filename="ca.crt")
    service.upload_file("mqtt", "tls_cert", pki["client.crt"].read_bytes(),
                        key_data=pki["client.key"].read_bytes(), filename="c.crt")
    service.apply_changes("mqtt", {"tls": True, "username": "u", "password": "pw"}, "t")
    with checks.broker_config(service.effective("mqtt", reveal=True)) as config:
        paths = [config.tls_ca_file, config.tls_cert_file, config.tls_key_file]
        assert all(paths) and config.tls and config.password == "pw"
        assert all(os.stat(p).st_mode & 0o777 == 0o600 for p in paths)
        assert "PRIVATE KEY" in Path(config.tls_key_file).read_text()
        assert "password" not in config.options
    assert not any(Path(p).exists() for p in paths)


def test_broker_config_addresses(ctx, monkeypatch) -> None:
    monkeypatch.setenv("KAFKA_BROKERS", "10.0.0.1:9092,[::1]:9093")
    with checks.broker_config(service.effective("kafka", reveal=True)) as config:
        assert config.addresses == (("10.0.0.1", 9092), ("::1", 9093))
        assert config.options["security_protocol"] == "PLAINTEXT"
    service.apply_changes("pulsar", {"host": "p1", "tls": True}, "t")
    with checks.broker_config(service.effective("pulsar", reveal=True)) as config:
        assert config.url == "pulsar+ssl://p1:6650" and config.tls
    monkeypatch.setenv("SP_PULSAR_URL", "pulsar://a:6650,b:6651")
    monkeypatch.setenv("SP_PULSAR_TLS", "false")
    with checks.broker_config(service.effective("pulsar", reveal=True)) as config:
        assert config.addresses == (("a", 6650), ("b", 6651)) and not config.tls


def test_readyz_snapshot_is_reused_within_its_ttl(app: Flask, client, monkeypatch) -> None:
    import console.health as health

    app.config["READY_CACHE_SECONDS"] = 60
    calls = []
    real = health.readiness
    monkeypatch.setattr(health, "readiness", lambda: calls.append(1) or real())
    for _ in range(5):
        assert client.get("/readyz").status_code == 200
    assert len(calls) == 1
    app.config["READY_CACHE_SECONDS"] = 0
    client.get("/readyz")
    assert len(calls) == 2
