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
          latency: float | None = 3.0, digest: str | None = None) -> None:
    """Record a result as if checked with the current settings (or with settings `digest`)."""
    result = CheckResult(protocol, status, latency, cause, "msg", {"target": "t"},
                         utcnow() - dt.timedelta(seconds=ago),
                         settings_digest=digest or checks.current_digests([protocol])[protocol])
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
    app.config["READY_REQUIRED"] = ["mqtt"]
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
        service.upload_file("mqtt", "tls_ca", pki["soon.crt"].read_bytes(), filename="soon.crt")
        store("mqtt", latency=12.5)
        store("kafka", "down", "connection_refused", latency=None)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'messaging_broker_up{protocol="mqtt"} 1.0' in text
    assert 'messaging_broker_check_current{protocol="mqtt"} 1.0' in text
    assert 'messaging_broker_up{protocol="kafka"} 0.0' in text
    assert 'messaging_broker_check_latency_seconds{protocol="mqtt"} 0.0125' in text
    assert 'messaging_broker_enabled{protocol="mqtt"} 1.0' in text
    assert 'messaging_console_database_up 1.0' in text
    line = next(row for row in text.splitlines()
                if row.startswith("messaging_certificate_expiry_timestamp_seconds{"))
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


def test_broker_config_cluster_addresses(ctx, monkeypatch) -> None:
    monkeypatch.setenv("NATS_SERVER_URL", "nats://n1:4222,tls://n2")
    with checks.broker_config(service.effective("nats", reveal=True)) as config:
        assert config.addresses == (("n1", 4222), ("n2", 4222)) and config.tls
    monkeypatch.setenv("SP_RABBITMQ_ADDRESSES", "r1:5672,r2:5673")
    with checks.broker_config(service.effective("rabbitmq", reveal=True)) as config:
        assert config.addresses == (("r1", 5672), ("r2", 5673)) and (config.host, config.port) == ("r1", 5672)


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


# --- a status is the status of the current settings ---------------------------------------------

def test_digest_follows_every_setting_a_check_uses(ctx, pki) -> None:
    service.apply_changes("rabbitmq", {"enabled": True, "password": "pw-1"}, "t")
    first = checks.current_digest("rabbitmq")
    assert first == checks.current_digest("rabbitmq") and len(first) == 64
    service.apply_changes("rabbitmq", {"enabled": False}, "t")
    assert checks.current_digest("rabbitmq") == first, "enabling is not another setting"
    service.apply_changes("rabbitmq", {"password": "pw-2"}, "t")
    second = checks.current_digest("rabbitmq")
    assert second != first, "a changed password is other settings"
    service.apply_changes("rabbitmq", {"heartbeat": 30}, "t")
    assert checks.current_digest("rabbitmq") != second
    settings = service.effective("rabbitmq", reveal=True)
    assert checks.settings_digest(settings, "other-key") != checks.settings_digest(settings)


def test_digest_ignores_what_the_clock_changes(ctx, pki) -> None:
    service.upload_file("mqtt", "tls_ca", pki["soon.crt"].read_bytes(), filename="soon.crt")
    settings = service.effective("mqtt", reveal=True)
    digest = checks.settings_digest(settings)
    for cert in settings.fields["tls_ca"].value["certificates"]:
        cert["days_left"] -= 1
        cert["status"] = "expired"
    assert checks.settings_digest(settings) == digest


def test_digest_of_prepared_values_is_the_digest_once_saved(ctx, pki) -> None:
    prep = service.prepare_changes("nats", {"enabled": True, "host": "n1", "port": "4223",
                                            "password": "pw", "username": "u"}, reveal=True)
    before = checks.settings_digest(prep.settings)
    service.apply_changes("nats", {"enabled": True, "host": "n1", "port": "4223", "password": "pw",
                                   "username": "u"}, "t")
    assert checks.current_digest("nats") == before


def test_result_of_other_settings_is_rechecking_everywhere(app: Flask, client, admin_client) -> None:
    with app.app_context():
        service.apply_changes("mqtt", {"enabled": True}, "t")
        store("mqtt")
    assert client.get("/readyz").get_json()["brokers"]["mqtt"]["status"] == "up"
    admin_client.patch("/api/v1/brokers/mqtt", json={"port": 1884})
    ready = client.get("/readyz")
    mqtt = ready.get_json()["brokers"]["mqtt"]
    assert ready.status_code == 503 and mqtt["status"] == "unknown" and mqtt["rechecking"] is True
    assert mqtt["checked_at"] is None and mqtt["previous_checked_at"]
    api = admin_client.get("/api/v1/brokers/mqtt").get_json()["status"]
    assert api["status"] == "unknown" and api["rechecking"] is True
    badge = admin_client.get("/settings/messaging/mqtt/status", headers={"HX-Request": "true"})
    html = badge.get_data(as_text=True)
    assert "● re-checking" in html and "● up" not in html and 'hx-trigger="every 1s"' in html
    overview = admin_client.get("/settings/messaging/overview", headers={"HX-Request": "true"})
    assert "● re-checking" in overview.get_data(as_text=True)
    assert "● up" not in overview.get_data(as_text=True)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'messaging_broker_check_current{protocol="mqtt"} 0.0' in text
    assert 'messaging_broker_up{protocol="mqtt"}' not in text
    assert 'messaging_broker_last_check_timestamp_seconds{protocol="mqtt"}' not in text
    with app.app_context():
        store("mqtt", "down", "connection_refused", latency=None)
    mqtt = client.get("/readyz").get_json()["brokers"]["mqtt"]
    assert mqtt["status"] == "down" and "rechecking" not in mqtt


def test_a_test_of_unsaved_values_does_not_hide_the_current_result(app: Flask, client) -> None:
    with app.app_context():
        service.apply_changes("nats", {"enabled": True}, "t")
        store("nats")
        store("nats", "down", "connection_refused", latency=None, digest="f" * 64)
        assert checks.latest()["nats"].status == "down"
    assert client.get("/readyz").get_json()["brokers"]["nats"]["status"] == "up"


def test_unreadable_secret_is_unknown_not_up(app: Flask, client) -> None:
    with app.app_context():
        service.apply_changes("nats", {"enabled": True, "password": "pw", "username": "u"}, "t")
        store("nats")
    app.extensions.pop("console_fernet")
    app.config["ENCRYPTION_KEY"] = "some-other-key"
    nats = client.get("/readyz").get_json()["brokers"]["nats"]
    assert nats["status"] == "unknown" and nats["cause"] == "secret_unreadable"


def test_claim_with_other_settings_is_due_at_once(ctx) -> None:
    now = utcnow()
    assert checks.claim("mqtt", 60, "a", now, digest="d1") is True
    assert checks.claim("mqtt", 60, "b", now, digest="d1") is False
    assert checks.claim("mqtt", 60, "b", now, digest="d2") is True, "changed settings: at once"
    assert checks.claim("mqtt", 60, "a", now, digest="d2") is False, "and only once"
    assert checks.claim("mqtt", 60, "a", now) is False


def test_scheduler_wakes_on_a_saved_change(app: Flask) -> None:
    import threading

    from console.checks.scheduler import Scheduler

    rounds: list[float] = []
    woke = threading.Event()
    scheduler = Scheduler(app, tick=60)
    scheduler.run_due = lambda: rounds.append(1) or (woke.set() if len(rounds) > 1 else None) or []
    app.extensions["console_scheduler"] = scheduler
    scheduler.start()
    try:
        with app.app_context():
            service.apply_changes("mqtt", {"port": 1999}, "t")
        assert woke.wait(10), "the save did not wake the scheduler (its tick is 60 s)"
    finally:
        scheduler.stop()
        app.extensions.pop("console_scheduler")


def test_same_endpoints_compares_what_names_resolve_to() -> None:
    hosts = {"localhost": ["127.0.0.1"], "broker": ["10.1.2.3"], "twin": ["10.1.2.3", "10.1.2.4"]}

    def resolver(host: str, port: int) -> list[str]:
        if host not in hosts:
            raise socket.gaierror(socket.EAI_NONAME, "unknown")
        return hosts[host]

    same = checks.same_endpoints
    assert same("127.0.0.1:1883", "localhost:1883", resolver=resolver)
    assert same("broker:9092,localhost:9093", "127.0.0.1:9093,twin:9092", resolver=resolver)
    assert not same("127.0.0.1:1883", "localhost:1884", resolver=resolver)
    assert not same("127.0.0.1:1883", "broker:1883", resolver=resolver)
    assert not same("pulsar://localhost:6650", "pulsar+ssl://127.0.0.1:6650", resolver=resolver)
    assert same("pulsar://localhost:6650", "pulsar://127.0.0.1:6650", resolver=resolver)
    assert not same("nowhere:1883", "127.0.0.1:1883", resolver=resolver)
    assert not same(None, "127.0.0.1:1883", resolver=resolver)


def test_identity_in_words() -> None:
    words = checks.describe_identity
    assert words({"target": "h:1", "product": "RabbitMQ", "version": "3.10.8", "cluster_name": "",
                  "vhost": "labvhost", "tls": False}) == ["RabbitMQ 3.10.8", "vhost labvhost", "TLS off"]
    assert words({"cluster_id": "c1", "controller_id": 1, "controller": "h:9092", "brokers": 3,
                  "tls": True}) == ["cluster c1", "controller h:9092", "3 brokers", "TLS on"]
    assert words({"server_name": "n1", "server_id": "X", "version": "2.9", "rtt_ms": 0.2,
                  "tls": False}) == ["server n1", "version 2.9", "round trip 0.2 ms", "TLS off"]
    assert words({"protocol_version": "3.1.1", "session_present": False, "tls": False}) == [
        "protocol version 3.1.1", "session present no", "TLS off"]


def test_a_save_drops_the_cached_readiness_answer(app: Flask, client) -> None:
    app.config["READY_CACHE_SECONDS"] = 60
    with app.app_context():
        service.apply_changes("mqtt", {"enabled": True}, "t")
        store("mqtt")
    assert client.get("/readyz").get_json()["brokers"]["mqtt"]["status"] == "up"
    with app.app_context():
        service.apply_changes("mqtt", {"port": 1999}, "t")
    assert client.get("/readyz").get_json()["brokers"]["mqtt"]["rechecking"] is True
