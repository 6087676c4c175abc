"""The broker lab's listeners behave as lab.json says, proven with the real client libraries.

Uses the session `lab` fixture (tests/lab_fixtures.py). Every network timeout is at most 3 s.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import gc
import json
import logging
import socket
import ssl
import time
import urllib.request
import uuid
import warnings
from typing import Any, Callable, TypeVar

import nats
import nats.errors
import paho.mqtt.client as mqtt
import pika
import pika.exceptions
import pulsar
import pytest
from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient
from cryptography import x509

from console.brokers.kafka import learned
from tests.lab_fixtures import load_brokerlab

T = TypeVar("T")
TIMEOUT = 3.0
EXPIRED = "certificate has expired"
MISMATCH = "mismatch"


def quietly(call: Callable[[], T]) -> T:
    """Run a client call; free and silence what the library leaks (paho: the SSLSocket of a failed
    handshake; nats-py: the plain transport it upgrades to TLS), then return or re-raise."""
    error: Exception | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            result = call()
        except Exception as exc:
            error = exc.with_traceback(None)
        gc.collect()
    if error is not None:
        raise error
    return result


def tls_context(cafile: str) -> ssl.SSLContext:
    """A verifying client context that trusts `cafile` only."""
    return ssl.create_default_context(cafile=cafile)


# -------------------------------------------------------------------------------------------- RabbitMQ

def amqp(lab: dict, port: int, *, tls_ca: str | None = None, password: str | None = None,
         vhost: str | None = None) -> dict[str, Any]:
    """Open a connection and a channel; return the server properties."""
    r = lab["brokers"]["rabbitmq"]
    params = pika.ConnectionParameters(
        host=r["host"], port=port, virtual_host=vhost or r["vhost"],
        credentials=pika.PlainCredentials(r["username"], password or r["password"]),
        socket_timeout=TIMEOUT, stack_timeout=TIMEOUT, blocked_connection_timeout=TIMEOUT,
        connection_attempts=1, retry_delay=0,
        ssl_options=pika.SSLOptions(tls_context(tls_ca), r["host"]) if tls_ca else None)
    conn = pika.BlockingConnection(params)
    try:
        conn.channel()
        return dict(conn._impl.server_properties)
    finally:
        conn.close()


def test_rabbitmq_plain(lab: dict) -> None:
    props = amqp(lab, lab["brokers"]["rabbitmq"]["plain"])
    assert props["product"] == b"RabbitMQ" or props["product"] == "RabbitMQ"


def test_rabbitmq_tls(lab: dict) -> None:
    amqp(lab, lab["brokers"]["rabbitmq"]["tls"], tls_ca=lab["certs"]["ca"])


@pytest.mark.parametrize("kind,reason", [("tls_expired", EXPIRED), ("tls_wronghost", MISMATCH)])
def test_rabbitmq_tls_bad_certificate(lab: dict, kind: str, reason: str) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match=reason):
        amqp(lab, lab["brokers"]["rabbitmq"][kind], tls_ca=lab["certs"]["ca"])


def test_rabbitmq_tls_other_ca(lab: dict) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        amqp(lab, lab["brokers"]["rabbitmq"]["tls"], tls_ca=lab["certs"]["other_ca"])


def test_rabbitmq_wrong_password(lab: dict) -> None:
    with pytest.raises(pika.exceptions.ProbableAuthenticationError, match="ACCESS_REFUSED"):
        amqp(lab, lab["brokers"]["rabbitmq"]["plain"], password="wrong")


def test_rabbitmq_denied_vhost(lab: dict) -> None:
    r = lab["brokers"]["rabbitmq"]
    denied = f"access to vhost '{r['denied_vhost']}' refused"
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError, match=denied):
        amqp(lab, r["plain"], vhost=r["denied_vhost"])


# ------------------------------------------------------------------------------------------------ MQTT

def mqtt_connect(lab: dict, port: int, *, ca: str | None = None, username: str | None = None,
                 password: str | None = None, certfile: str | None = None,
                 keyfile: str | None = None) -> dict[str, Any]:
    """Connect once; {"rc": CONNACK reason} or {"lost": ...}; socket and TLS errors are raised."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"lab-{uuid.uuid4().hex[:8]}",
                         protocol=mqtt.MQTTv311)
    client.connect_timeout = TIMEOUT
    if username:
        client.username_pw_set(username, password)
    if ca:
        client.tls_set(ca_certs=ca, certfile=certfile, keyfile=keyfile)
    result: dict[str, Any] = {}
    client.on_connect = lambda _c, _u, _f, rc, _p: result.setdefault("rc", rc)
    client.on_disconnect = lambda _c, _u, _f, rc, _p: result.setdefault("lost", rc)
    quietly(lambda: client.connect(lab["brokers"]["mqtt"]["host"], port, keepalive=10))
    try:
        deadline = time.monotonic() + TIMEOUT
        while not result and time.monotonic() < deadline:
            client.loop(timeout=0.05)
    finally:
        client.disconnect()
    return result


def test_mqtt_plain_anonymous(lab: dict) -> None:
    res = mqtt_connect(lab, lab["brokers"]["mqtt"]["plain"])
    assert "rc" in res and not res["rc"].is_failure


def test_mqtt_plain_auth(lab: dict) -> None:
    m = lab["brokers"]["mqtt"]
    res = mqtt_connect(lab, m["plain_auth"], username=m["username"], password=m["password"])
    assert "rc" in res and not res["rc"].is_failure


@pytest.mark.parametrize("password", ["wrong", None])
def test_mqtt_plain_auth_rejected(lab: dict, password: str | None) -> None:
    m = lab["brokers"]["mqtt"]
    res = mqtt_connect(lab, m["plain_auth"], username=m["username"] if password else None, password=password)
    assert res["rc"].is_failure and res["rc"].value == 135


def test_mqtt_tls_auth(lab: dict) -> None:
    m = lab["brokers"]["mqtt"]
    res = mqtt_connect(lab, m["tls"], ca=lab["certs"]["ca"], username=m["username"], password=m["password"])
    assert "rc" in res and not res["rc"].is_failure


@pytest.mark.parametrize("kind,reason", [("tls_expired", EXPIRED), ("tls_wronghost", MISMATCH)])
def test_mqtt_tls_bad_certificate(lab: dict, kind: str, reason: str) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match=reason):
        mqtt_connect(lab, lab["brokers"]["mqtt"][kind], ca=lab["certs"]["ca"])


def test_mqtt_tls_other_ca(lab: dict) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        mqtt_connect(lab, lab["brokers"]["mqtt"]["tls"], ca=lab["certs"]["other_ca"])


def test_mqtt_client_certificate_required(lab: dict) -> None:
    port, certs = lab["brokers"]["mqtt"]["tls_client_cert"], lab["certs"]
    with_cert = mqtt_connect(lab, port, ca=certs["ca"], certfile=certs["client_crt"],
                             keyfile=certs["client_key"])
    assert "rc" in with_cert and not with_cert["rc"].is_failure
    try:
        without = mqtt_connect(lab, port, ca=certs["ca"])
    except (ssl.SSLError, ConnectionError):
        return
    assert "rc" not in without


# ------------------------------------------------------------------------------------------------ NATS

def nats_connect(url: str, **kwargs: Any) -> dict[str, Any]:
    """Connect, PING, close; return the server INFO."""
    async def run() -> dict[str, Any]:
        async def quiet(_exc: Exception) -> None:
            return None

        nc = await asyncio.wait_for(nats.connect(
            servers=[url], connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=1,
            reconnect_time_wait=0.1, error_cb=quiet, **kwargs), timeout=TIMEOUT)
        try:
            await nc.rtt()
            return dict(nc._server_info)
        finally:
            await nc.close()

    return quietly(lambda: asyncio.run(run()))


def nats_url(lab: dict, kind: str, scheme: str = "nats") -> str:
    n = lab["brokers"]["nats"]
    return f"{scheme}://{n['host']}:{n[kind]}"


def test_nats_plain(lab: dict) -> None:
    assert nats_connect(nats_url(lab, "plain"))["server_id"]


def test_nats_monitor_healthz(lab: dict) -> None:
    n = lab["brokers"]["nats"]
    with urllib.request.urlopen(f"http://{n['host']}:{n['monitor']}/healthz", timeout=TIMEOUT) as resp:
        assert json.load(resp) == {"status": "ok"}


def test_nats_user_password(lab: dict) -> None:
    n = lab["brokers"]["nats"]
    assert nats_connect(nats_url(lab, "plain_auth"), user=n["username"], password=n["password"])


def test_nats_wrong_password(lab: dict) -> None:
    n = lab["brokers"]["nats"]
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        nats_connect(nats_url(lab, "plain_auth"), user=n["username"], password="wrong")


def test_nats_token(lab: dict) -> None:
    assert nats_connect(nats_url(lab, "plain_token"), token=lab["brokers"]["nats"]["token"])
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        nats_connect(nats_url(lab, "plain_token"), token="wrong-token")


def test_nats_tls(lab: dict) -> None:
    n = lab["brokers"]["nats"]
    info = nats_connect(nats_url(lab, "tls", "tls"), tls=tls_context(lab["certs"]["ca"]),
                        user=n["username"], password=n["password"])
    assert info.get("tls_required") is True


@pytest.mark.parametrize("kind,reason", [("tls_expired", EXPIRED), ("tls_wronghost", MISMATCH)])
def test_nats_tls_bad_certificate(lab: dict, kind: str, reason: str) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match=reason):
        nats_connect(nats_url(lab, kind, "tls"), tls=tls_context(lab["certs"]["ca"]))


# ----------------------------------------------------------------------------------------------- Kafka

def kafka_probe(bootstrap: str, **conf: Any) -> tuple[Any, list[KafkaError]]:
    """list_topics within TIMEOUT; (metadata or None, errors reported to error_cb).

    When the broker advertises an address that cannot be reached, librdkafka drops the bootstrap connection
    for it once it has the first metadata; a call that missed that answer waits for a re-bootstrap, which
    on a loaded machine may not come within TIMEOUT (console.brokers.kafka.fetch_metadata): after 0.5 s of
    that, a fresh client bootstraps again."""
    errors: list[KafkaError] = []
    deadline = time.monotonic() + TIMEOUT
    fatal = {KafkaError._SSL, KafkaError._AUTHENTICATION, KafkaError._ALL_BROKERS_DOWN}
    while time.monotonic() < deadline:
        admin = AdminClient({"bootstrap.servers": bootstrap, "error_cb": errors.append, "log_level": 0,
                             "socket.connection.setup.timeout.ms": int(TIMEOUT * 1000),
                             "socket.timeout.ms": int(TIMEOUT * 1000), **conf})
        first, stuck = len(errors), None
        while time.monotonic() < deadline:
            try:
                return admin.list_topics(timeout=0.2), errors
            except Exception:
                admin.poll(0)
                mine = errors[first:]
                if any(learned(e) for e in mine):
                    stuck = stuck or time.monotonic() + 0.5
                    if time.monotonic() > stuck:
                        break
                elif any(e.code() in fatal for e in mine):
                    return None, errors
    return None, errors


def kafka_addr(lab: dict, kind: str) -> str:
    k = lab["brokers"]["kafka"]
    return f"{k['host']}:{k[kind]}"


def test_kafka_plain(lab: dict) -> None:
    md, errors = kafka_probe(kafka_addr(lab, "plain"))
    assert md is not None, errors
    assert md.cluster_id == lab["brokers"]["kafka"]["cluster_id"]


def test_kafka_tls(lab: dict) -> None:
    md, errors = kafka_probe(kafka_addr(lab, "tls"), **{"security.protocol": "SSL",
                                                        "ssl.ca.location": lab["certs"]["ca"]})
    assert md is not None, errors
    assert [b.port for b in md.brokers.values()] == [lab["brokers"]["kafka"]["tls"]]


@pytest.mark.parametrize("kind,relax", [("tls_expired", {"enable.ssl.certificate.verification": "false"}),
                                        ("tls_wronghost", {"ssl.endpoint.identification.algorithm": "none"})])
def test_kafka_tls_bad_certificate(lab: dict, kind: str, relax: dict[str, str]) -> None:
    conf = {"security.protocol": "SSL", "ssl.ca.location": lab["certs"]["ca"]}
    md, errors = kafka_probe(kafka_addr(lab, kind), **conf)
    assert md is None
    assert any(e.code() == KafkaError._SSL and "certificate verify failed" in e.str() for e in errors), errors
    md, errors = kafka_probe(kafka_addr(lab, kind), **conf, **relax)
    assert md is not None, errors


def test_kafka_sasl_always_fails(lab: dict) -> None:
    md, errors = kafka_probe(kafka_addr(lab, "sasl"), **{
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "labuser", "sasl.password": "labpass"})
    assert md is None
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors


# ---------------------------------------------------------------------------------------------- Pulsar

_PULSAR_LOG = logging.getLogger("tests.brokerlab.pulsar")


def pulsar_partitions(url: str, **kwargs: Any) -> list[str]:
    """get_topic_partitions on a fresh client (a lookup round trip)."""
    client = pulsar.Client(url, operation_timeout_seconds=int(TIMEOUT),
                           connection_timeout_ms=int(TIMEOUT * 1000), logger=_PULSAR_LOG, **kwargs)
    try:
        return client.get_topic_partitions("persistent://public/default/brokerlab-check")
    finally:
        client.close()


def test_pulsar_plain_produce_consume(lab: dict) -> None:
    p = lab["brokers"]["pulsar"]
    assert pulsar_partitions(p["url"]) == ["persistent://public/default/brokerlab-check"]
    client = pulsar.Client(p["url"], operation_timeout_seconds=int(TIMEOUT), logger=_PULSAR_LOG)
    try:
        topic = f"persistent://public/default/lab-{uuid.uuid4().hex[:8]}"
        consumer = client.subscribe(topic, "lab", initial_position=pulsar.InitialPosition.Earliest)
        client.create_producer(topic).send(b"hello-lab")
        msg = consumer.receive(timeout_millis=int(TIMEOUT * 1000))
        consumer.acknowledge(msg)
        assert msg.data() == b"hello-lab"
    finally:
        client.close()


def test_pulsar_tls(lab: dict) -> None:
    p = lab["brokers"]["pulsar"]
    assert pulsar_partitions(p["tls_url"], tls_trust_certs_file_path=lab["certs"]["ca"],
                             tls_validate_hostname=True)


@pytest.mark.parametrize("kind", ["tls_expired", "tls_wronghost"])
def test_pulsar_tls_bad_certificate(lab: dict, kind: str) -> None:
    p = lab["brokers"]["pulsar"]
    url = f"pulsar+ssl://{p['host']}:{p[kind]}"
    with pytest.raises(pulsar.ConnectError):
        pulsar_partitions(url, tls_trust_certs_file_path=lab["certs"]["ca"], tls_validate_hostname=True)
    assert pulsar_partitions(url, tls_allow_insecure_connection=True)


# ---------------------------------------------------------------------------------------------- Faults

def test_fault_silent_accepts_and_never_speaks(lab: dict) -> None:
    f = lab["faults"]
    with socket.create_connection((f["host"], f["silent"]), timeout=TIMEOUT) as sock:
        sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            sock.recv(1)


def test_fault_syn_drop_times_out(lab: dict) -> None:
    f = lab["faults"]
    started = time.monotonic()
    with pytest.raises((socket.timeout, TimeoutError)):
        socket.create_connection((f["host"], f["syn_drop"]), timeout=0.5).close()
    assert time.monotonic() - started >= 0.45


def test_fault_refused(lab: dict) -> None:
    f = lab["faults"]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((f["host"], f["refused"]), timeout=TIMEOUT).close()


def test_fault_syn_drop_with_a_client_library(lab: dict) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="lab-syn-drop")
    client.connect_timeout = 0.5
    with pytest.raises((socket.timeout, TimeoutError)):
        client.connect(lab["faults"]["host"], lab["faults"]["syn_drop"])


def test_cluster_cases_name_live_listeners_and_fault_ports(lab: dict) -> None:
    """lab.json's multi-node cases (a running lab started by an older script gets them added): their live
    nodes accept connections on 127.0.0.1 and as localhost, their dead nodes are the fault ports."""
    cases = lab["clusters"]
    assert cases == load_brokerlab().clusters()
    assert {c["protocol"] for c in cases.values()} == {"kafka", "nats", "rabbitmq", "pulsar"}
    faults = {f"{lab['faults']['host']}:{lab['faults'][k]}": k for k in ("refused", "silent", "syn_drop")}
    for name, case in cases.items():
        live = [n for n, cause in case["nodes"].items() if cause == "ok"]
        dead = [n for n, cause in case["nodes"].items() if cause != "ok"]
        assert live and dead, name
        for node in live:
            host, _, port = node.rpartition(":")
            socket.create_connection((host, int(port)), timeout=TIMEOUT).close()
        assert all(node in faults for node in dead) or name == "kafka_advertised", (name, dead)
    assert {faults[n] for c in cases.values() for n in c["nodes"] if n in faults} == set(faults.values())


# ---------------------------------------------------------------------------------- production faults

def test_fault_closed_accepts_and_closes_at_once(lab: dict) -> None:
    f = lab["faults"]
    with socket.create_connection((f["host"], f["closed"]), timeout=TIMEOUT) as sock:
        sock.settimeout(TIMEOUT)
        assert sock.recv(1) == b""


def test_fault_certificates(lab: dict) -> None:
    def load(name: str) -> x509.Certificate:
        with open(lab["certs"][name], "rb") as handle:
            return x509.load_pem_x509_certificate(handle.read())

    notyet = load("notyet_crt")
    assert notyet.not_valid_before_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    assert notyet.issuer == load("ca").subject
    assert load("other_client_crt").issuer == load("other_ca").subject


def test_fault_certificates_join_an_existing_pki(tmp_path) -> None:
    """A lab whose PKI predates the fault certificates gets them signed by its own CAs, without a new CA
    (which would break the brokers that run with the old one); a not-yet-valid certificate whose start
    comes close is issued again."""
    pki = load_brokerlab()._pki_module()
    pki.write_pki(tmp_path)
    ca = (tmp_path / "ca.crt").read_bytes()
    (tmp_path / "notyet.crt").unlink()
    (tmp_path / "other-client.key").unlink()
    assert set(pki.write_fault_certs(tmp_path)) == {"notyet", "other-client"}
    assert (tmp_path / "ca.crt").read_bytes() == ca and pki.write_fault_certs(tmp_path) == {}
    soon = pki.issue(pki._load(tmp_path, "ca"), "localhost", ("localhost",), ("127.0.0.1",),
                     not_before=dt.datetime.now(dt.UTC) + dt.timedelta(hours=2))
    pki._save(tmp_path, {"notyet": soon})
    assert set(pki.write_fault_certs(tmp_path)) == {"notyet"}
    cert = x509.load_pem_x509_certificate((tmp_path / "notyet.crt").read_bytes())
    assert cert.not_valid_before_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=pki.NOT_YET_VALID_MARGIN)


def _tls(lab: dict, port: int, client: str | None = None, **context: Any) -> str:
    """A TLS handshake and one read on 127.0.0.1:port (the lab's CA trusted): the version, or the error."""
    ctx = tls_context(lab["certs"]["ca"])
    if client:
        ctx.load_cert_chain(lab["certs"][f"{client}_crt"], lab["certs"][f"{client}_key"])
    for key, value in context.items():
        setattr(ctx, key, value)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        try:
            with ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
                tls.settimeout(0.3)
                try:
                    tls.recv(1)
                except TimeoutError:
                    pass
                return tls.version() or ""
        except ssl.SSLError as exc:
            return exc.reason or str(exc)


MTLS = [("rabbitmq", "tls_client_cert"), ("mqtt", "tls_client_cert"), ("kafka", "tls_client_cert"),
        ("pulsar", "tls_client_cert")]


@pytest.mark.parametrize("broker,kind", MTLS)
def test_mutual_tls_listeners(lab: dict, broker: str, kind: str) -> None:
    """No client certificate: CERTIFICATE_REQUIRED at the first read (TLS 1.3); one from another CA:
    UNKNOWN_CA; the lab's client certificate: accepted."""
    port = lab["brokers"][broker][kind]
    assert _tls(lab, port) == "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    assert _tls(lab, port, "other_client") == "TLSV1_ALERT_UNKNOWN_CA"
    assert _tls(lab, port, "client") == "TLSv1.3"


def test_mutual_tls_nats_says_bad_certificate_to_both(lab: dict) -> None:
    n = lab["brokers"]["nats"]
    with pytest.raises((ssl.SSLError, ConnectionError, nats.errors.Error, OSError)):
        nats_connect(nats_url(lab, "tls_client_cert", "tls"), tls=tls_context(lab["certs"]["ca"]))
    ctx = tls_context(lab["certs"]["ca"])
    ctx.load_cert_chain(lab["certs"]["client_crt"], lab["certs"]["client_key"])
    assert nats_connect(f"tls://{n['host']}:{n['tls_client_cert']}", tls=ctx)["tls_verify"] is True


def test_mutual_tls_12_fails_inside_the_handshake(lab: dict) -> None:
    port = lab["brokers"]["mqtt"]["tls12_client_cert"]
    assert _tls(lab, port) == "SSLV3_ALERT_HANDSHAKE_FAILURE"
    assert _tls(lab, port, "client") == "TLSv1.2"


@pytest.mark.parametrize("broker", ["rabbitmq", "mqtt", "nats", "kafka", "pulsar"])
def test_not_yet_valid_certificate(lab: dict, broker: str) -> None:
    port = lab["brokers"][broker]["tls_notyet"]
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        if broker == "nats":
            sock.recv(4096)       # INFO, in plaintext before the upgrade
        with pytest.raises(ssl.SSLCertVerificationError) as raised:
            tls_context(lab["certs"]["ca"]).wrap_socket(sock, server_hostname="127.0.0.1")
    assert raised.value.verify_code == 9 and "not yet valid" in raised.value.verify_message


def test_kafka_advertises_a_name_that_cannot_resolve(lab: dict) -> None:
    """The name is refused by the resolver library itself (a 64-character label): no DNS query is sent."""
    k = lab["brokers"]["kafka"]
    metadata, _ = kafka_probe(kafka_addr(lab, "advertised_unresolvable"))
    assert [f"{b.host}:{b.port}" for b in metadata.brokers.values()] == [k["advertised_unresolvable_address"]]
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo(k["advertised_unresolvable_address"].rsplit(":", 1)[0].encode(), 9092)


def test_kafka_advertises_an_unreachable_address(lab: dict) -> None:
    k = lab["brokers"]["kafka"]
    metadata, _ = kafka_probe(kafka_addr(lab, "advertised_bad"))
    assert [f"{b.host}:{b.port}" for b in metadata.brokers.values()] == [k["advertised_bad_address"]]
    with pytest.raises(ConnectionRefusedError):
        host, port = k["advertised_bad_address"].split(":")
        socket.create_connection((host, int(port)), timeout=TIMEOUT).close()


def test_nats_limited_refuses_a_second_connection(lab: dict) -> None:
    n = lab["brokers"]["nats"]
    with socket.create_connection((n["host"], n["limited"]), timeout=TIMEOUT) as sock:
        sock.settimeout(TIMEOUT)
        data = b""
        while b"-ERR" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"INFO ") and b"-ERR 'maximum connections exceeded'" in data


@pytest.mark.parametrize("vhost,user", [("limited_vhost", None), (None, "limited_user")])
def test_rabbitmq_connection_limits(lab: dict, vhost: str | None, user: str | None) -> None:
    r = lab["brokers"]["rabbitmq"]
    params = pika.ConnectionParameters(
        host=r["host"], port=r["plain"], virtual_host=r[vhost] if vhost else r["vhost"],
        credentials=pika.PlainCredentials(r[user] if user else r["username"],
                                          r["limited_password"] if user else r["password"]),
        socket_timeout=TIMEOUT, stack_timeout=TIMEOUT, connection_attempts=1, retry_delay=0)
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError, match=r"connection limit \(0\) is reached"):
        pika.BlockingConnection(params)


def test_rabbitmq_restricted_user_may_not_publish(lab: dict) -> None:
    r = lab["brokers"]["rabbitmq"]
    params = pika.ConnectionParameters(
        host=r["host"], port=r["plain"], virtual_host=r["vhost"],
        credentials=pika.PlainCredentials(r["restricted_user"], r["restricted_password"]),
        socket_timeout=TIMEOUT, stack_timeout=TIMEOUT, connection_attempts=1, retry_delay=0)
    conn = pika.BlockingConnection(params)
    try:
        channel = conn.channel()
        channel.exchange_declare("amq.topic", passive=True)      # a passive declare checks nothing
        channel.confirm_delivery()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="ACCESS_REFUSED"):
            channel.basic_publish("amq.topic", "nothing.binds.this", b"x")
    finally:
        conn.close()


def test_mqtt_restricted_user_is_refused_outside_its_topic(lab: dict) -> None:
    m = lab["brokers"]["mqtt"]
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"lab-{uuid.uuid4().hex[:8]}",
                         protocol=mqtt.MQTTv5)
    client.username_pw_set(m["restricted_user"], m["restricted_password"])
    acks: dict[str, Any] = {}
    client.on_connect = lambda *args: acks.setdefault("connack", args[3])
    client.on_publish = lambda _c, _u, mid, code, _p: acks.setdefault(mid, code)
    client.connect(m["host"], m["restricted"])
    try:
        deadline = time.monotonic() + TIMEOUT
        while "connack" not in acks and time.monotonic() < deadline:
            client.loop(0.05)
        assert not acks["connack"].is_failure
        denied = client.publish("elsewhere/x", b"x", qos=1).mid
        allowed = client.publish("sensors/x", b"x", qos=1).mid
        while (denied not in acks or allowed not in acks) and time.monotonic() < deadline:
            client.loop(0.05)
        assert str(acks[denied]) == "Not authorized" and not acks[allowed].is_failure
    finally:
        client.disconnect()


def test_nats_restricted_user_is_refused_outside_its_subjects(lab: dict) -> None:
    n = lab["brokers"]["nats"]

    async def run() -> list[str]:
        seen: list[str] = []

        async def collect(exc: Exception) -> None:
            seen.append(str(exc))

        nc = await nats.connect(servers=[f"nats://{n['host']}:{n['restricted']}"], user=n["restricted_user"],
                                password=n["restricted_password"], connect_timeout=2, allow_reconnect=False,
                                error_cb=collect)
        try:
            await nc.subscribe("_INBOX.lab")
            await nc.flush(timeout=TIMEOUT)
            await asyncio.sleep(0.2)
        finally:
            await nc.close()
        return seen

    assert any("permissions violation" in said.lower() for said in asyncio.run(run()))


# ------------------------------------------------------------------------------------------ the harness

def test_lab_json_matches_the_port_plan(lab: dict) -> None:
    assert lab["brokers"]["rabbitmq"]["plain"] == 17672
    assert lab["faults"] == {"host": "127.0.0.1", "silent": 17001, "syn_drop": 17002, "refused": 17999,
                             "closed": 17003}
    assert all(b["host"] == "127.0.0.1" for b in lab["brokers"].values())
    assert all(pid for pid in (proc["pid"] for proc in lab["processes"].values()))


def test_start_is_idempotent_and_fast(lab: dict) -> None:
    brokerlab = load_brokerlab()
    started = time.monotonic()
    again = brokerlab.start(lab["dir"])
    assert time.monotonic() - started < 3
    pids = {name: proc["pid"] for name, proc in again["processes"].items()}
    assert pids == {name: proc["pid"] for name, proc in lab["processes"].items()}
    assert brokerlab.load(lab["dir"])["brokers"] == lab["brokers"]
