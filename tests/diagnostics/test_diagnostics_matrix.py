"""Fault matrix of the step-wise diagnosis (console.diagnostics.engine) against the real brokers of the lab.

For each protocol, every failure the local brokers can really produce: refused, accept-and-silent,
SYN-dropped, wrong CA, system store, expired, host-name mismatch, TLS to a plain port, plaintext to a TLS
port, another protocol on the port, bad credentials, and each protocol's own cases (Kafka SASL and a
missing topic, RabbitMQ vhosts and exchanges, MQTT and NATS logins, MQTT client certificates). Each case
asserts the cause code, the failing step, that earlier steps passed and later ones were skipped, that the
fix names the concrete value to change, and that the diagnosis kept its deadline. Then: healthy runs of
every broker, DNS failures through an injected resolver (no real lookup), deadlines on the silent port,
"following the fix makes it green", progress callbacks, no leaked threads or sockets, and a run inside a
running asyncio loop. Then the production faults (tests/production_faults.py: mutual TLS, a certificate
not yet valid, an accept-and-close port, a Kafka broker advertising an address nobody can reach,
connection limits, restricted users) as a (protocol × fault) matrix that also asserts that the check
names the same cause. BrokerConfig objects are built directly; only 127.0.0.1 is contacted.
"""
from __future__ import annotations

import asyncio
import gc
import os
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Callable

import pika
import pytest

from console.brokers import PROTOCOLS, driver_class, get_driver
from console.brokers.base import CAUSES, BrokerConfig, StepFailed
from console.diagnostics.base import STEPS, Diagnosis
from console.diagnostics.causes import explain
from console.diagnostics.engine import _named_by_step, diagnose
from tests.production_faults import FAULTS, Fault, lab_config

HOST = "127.0.0.1"
TIMEOUT = 3.0
FAST = 1.0
ALLOWANCE = 1.1
TLS_LISTENERS = {"tls", "tls_expired", "tls_wronghost", "tls_client_cert"}
LOGIN = {"mqtt": {"plain_auth", "tls"}, "nats": {"plain_auth", "tls", "tls_expired", "tls_wronghost"},
         "rabbitmq": {"plain", "tls", "tls_expired", "tls_wronghost"}, "kafka": set(), "pulsar": set()}
TOPIC = "messaging-console-diagnostics-matrix"
UNFILLED = re.compile(r"\{\w+\}|(^|[\s(])\?($|[\s),.;:])")


def cfg(lab: dict, protocol: str, listener: str = "plain", *, port: int | None = None, tls: bool | None = None,
        ca: str | None = "ca", login: bool | None = None, options: dict[str, Any] | None = None,
        **changes: Any) -> BrokerConfig:
    """A BrokerConfig for one lab listener (or a raw port)."""
    config = lab_config(lab, protocol, port or lab["brokers"][protocol][listener],
                        tls=listener in TLS_LISTENERS if tls is None else tls,
                        login=listener in LOGIN[protocol] if login is None else login, ca=ca, options=options,
                        name="diagnostics-matrix")
    return replace(config, **changes)


def fault(kind: str) -> Callable[[dict, str], BrokerConfig]:
    return lambda lab, protocol: cfg(lab, protocol, port=lab["faults"][kind])


@dataclass(frozen=True)
class Case:
    """One matrix cell: a configuration, the cause and failing step it must give, and what the fix names."""

    protocol: str
    name: str
    build: Callable[[dict], BrokerConfig]
    cause: str
    step: str | None
    fix: tuple[Any, ...] = ()
    detail: tuple[str, ...] = ()
    timeout: float = TIMEOUT
    skip: str | None = None

    @property
    def id(self) -> str:
        return f"{self.protocol}-{self.name}"


def case(protocol: str, name: str, build: Callable[[dict], BrokerConfig], cause: str, step: str | None, *,
         fix: tuple[Any, ...] = (), detail: tuple[str, ...] = (), timeout: float = TIMEOUT,
         skip: str | None = None) -> Case:
    return Case(protocol, name, build, cause, step, fix, detail, timeout, skip)


OTHER_PROTOCOL = {"kafka": ("rabbitmq", "AMQP"), "pulsar": ("mqtt", "MQTT"), "mqtt": ("rabbitmq", "AMQP"),
                  "nats": ("mqtt", "MQTT"), "rabbitmq": ("nats", "NATS")}
PLAIN_FIX = {"kafka": "security_protocol", "pulsar": "pulsar+ssl://", "mqtt": "tls = true", "nats": "Turn TLS on",
             "rabbitmq": "tls = true"}
TLS_OFF_FIX = {"kafka": "PLAINTEXT", "pulsar": "pulsar://", "mqtt": "TLS off", "nats": "tls {",
               "rabbitmq": "TLS off"}


def contract_cases() -> list[Case]:
    """The failures every protocol can produce in the lab."""
    cases: list[Case] = []
    for p in PROTOCOLS:
        other, speaks = OTHER_PROTOCOL[p]
        cases += [
            case(p, "healthy", lambda lab, p=p: cfg(lab, p), "ok", None),
            case(p, "healthy_tls", lambda lab, p=p: cfg(lab, p, "tls"), "ok", None),
            case(p, "refused", lambda lab, p=p: fault("refused")(lab, p), "connection_refused", "tcp",
                 fix=(lambda lab, p: str(lab["faults"]["refused"]),), timeout=FAST),
            case(p, "silent", lambda lab, p=p: fault("silent")(lab, p), "handshake_timeout", "handshake",
                 fix=(lambda lab, p: str(lab["faults"]["silent"]),), timeout=FAST),
            case(p, "syn_dropped", lambda lab, p=p: fault("syn_drop")(lab, p), "connect_timeout", "tcp",
                 fix=("firewall", lambda lab, p: str(lab["faults"]["syn_drop"])), timeout=FAST),
            case(p, "tls_wrong_ca", lambda lab, p=p: cfg(lab, p, "tls", ca="other_ca"), "tls_untrusted", "tls",
                 fix=("tls_ca", "CN=Messaging Console Test CA", "CN=Unrelated Test CA")),
            case(p, "tls_system_store", lambda lab, p=p: cfg(lab, p, "tls", ca=None), "tls_untrusted", "tls",
                 fix=("tls_ca", "no truststore is configured")),
            case(p, "tls_expired", lambda lab, p=p: cfg(lab, p, "tls_expired"), "tls_expired", "tls",
                 fix=("Renew", lambda lab, p: f"{HOST}:{lab['brokers'][p]['tls_expired']}")),
            case(p, "tls_wronghost", lambda lab, p=p: cfg(lab, p, "tls_wronghost"), "tls_hostname_mismatch", "tls",
                 fix=("wrong.example", HOST)),
            case(p, "tls_to_plain", lambda lab, p=p: cfg(lab, p, "plain", tls=True, login=False),
                 "tls_not_offered", "tls", fix=(TLS_OFF_FIX[p],), timeout=2.0),
            case(p, "plain_to_tls", lambda lab, p=p: cfg(lab, p, "tls", tls=False), "tls_required",
                 "handshake", fix=(PLAIN_FIX[p],)),
            case(p, "wrong_protocol",
                 lambda lab, p=p, o=other: cfg(lab, p, port=lab["brokers"][o]["plain"], login=False),
                 "protocol_mismatch", "handshake", detail=(f"speaks {speaks}",),
                 fix=(f"usually {driver_class(p).default_port}",)),
        ]
    return cases


def _kafka_sasl(lab: dict, listener: str, mechanism: str = "SCRAM-SHA-256") -> BrokerConfig:
    return cfg(lab, "kafka", listener, username="anyone", password="anything",
               options={"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": mechanism})


def protocol_cases() -> list[Case]:
    """Each protocol's own cases."""
    rabbit = lambda lab, **kw: cfg(lab, "rabbitmq", **kw)  # noqa: E731
    return [
        case("kafka", "sasl_bad_login", lambda lab: _kafka_sasl(lab, "sasl"), "auth_failed", "auth",
             fix=("anyone", "SCRAM-SHA-256"), detail=("unknown-user",)),
        case("kafka", "sasl_to_plain_listener", lambda lab: _kafka_sasl(lab, "plain"),
             "sasl_mechanism_unsupported", "auth", fix=("security_protocol",)),
        case("kafka", "plain_to_sasl_listener", lambda lab: cfg(lab, "kafka", "sasl"), "auth_failed", "auth",
             fix=("sasl_mechanism",)),
        case("kafka", "missing_topic", lambda lab: cfg(lab, "kafka", options={"topic": "no-such-topic-xyz"}),
             "not_found", "operation", fix=("no-such-topic-xyz", "kafka-topics.sh")),
        case("kafka", "topic", lambda lab: cfg(lab, "kafka", options={"topic": TOPIC}), "ok", None),
        case("kafka", "sasl_success", lambda lab: _kafka_sasl(lab, "sasl"), "ok", None,
             skip="Tansu 0.6.0 stores no SCRAM credentials (dynostore no-ops), so every SASL login to the lab's "
                  "own Tansu fails with unknown-user; successful logins are tested through the SASL front over "
                  "Tansu in tests/brokers/test_sasl_front.py"),
        case("pulsar", "bad_token", lambda lab: cfg(lab, "pulsar", token="junk"), "auth_failed", "auth",
             skip="pulsar-lite accepts any credentials (junk tokens and basic auth succeed), so no token "
                  "rejection can be produced here; refused tokens are tested through the token front over "
                  "pulsar-lite in tests/brokers/test_token_front.py"),
        case("pulsar", "junk_token_accepted", lambda lab: cfg(lab, "pulsar", token="junk"), "ok", None),
        case("pulsar", "missing_topic", lambda lab: cfg(lab, "pulsar", options={"topic": "persistent://no/such/t"}),
             "not_found", "operation",
             skip="pulsar-lite answers every partitioned-metadata lookup (it creates topics on demand), so no "
                  "missing topic can be produced"),
        case("pulsar", "tls_wronghost_unverified",
             lambda lab: cfg(lab, "pulsar", "tls_wronghost", tls_verify_hostname=False), "ok", None),
        case("mqtt", "bad_password", lambda lab: cfg(lab, "mqtt", "plain_auth", password="wrong-pass"),
             "auth_failed", "auth", fix=("password",), detail=("135",)),
        case("mqtt", "no_credentials", lambda lab: cfg(lab, "mqtt", "plain_auth", login=False), "auth_failed",
             "auth", fix=("username and password",)),
        case("mqtt", "v5_bad_password",
             lambda lab: cfg(lab, "mqtt", "plain_auth", password="wrong-pass", options={"protocol_version": "5"}),
             "auth_failed", "auth", detail=("Not authorized",)),
        case("mqtt", "login", lambda lab: cfg(lab, "mqtt", "plain_auth"), "ok", None),
        case("mqtt", "client_cert_missing", lambda lab: cfg(lab, "mqtt", "tls_client_cert"),
             "tls_client_cert_required", "handshake", fix=("tls_cert", "tls_key")),
        case("mqtt", "client_cert",
             lambda lab: cfg(lab, "mqtt", "tls_client_cert", tls_cert_file=lab["certs"]["client_crt"],
                             tls_key_file=lab["certs"]["client_key"]), "ok", None),
        case("mqtt", "qos0", lambda lab: cfg(lab, "mqtt", options={"qos": "0"}), "ok", None),
        case("nats", "bad_password", lambda lab: cfg(lab, "nats", "plain_auth", password="wrong-pass"),
             "auth_failed", "auth", detail=("Authorization Violation",), fix=("password",)),
        case("nats", "no_credentials", lambda lab: cfg(lab, "nats", "plain_auth", login=False), "auth_failed",
             "auth", fix=("username and password or a token",)),
        case("nats", "token", lambda lab: cfg(lab, "nats", "plain_token", token=lab["brokers"]["nats"]["token"]),
             "ok", None),
        case("nats", "bad_token", lambda lab: cfg(lab, "nats", "plain_token", token="wrong-token"), "auth_failed",
             "auth", fix=("token",)),
        case("rabbitmq", "bad_password", lambda lab: rabbit(lab, password="wrong-pass"), "auth_failed", "auth",
             fix=("labuser",), detail=("ACCESS_REFUSED",)),
        case("rabbitmq", "missing_vhost", lambda lab: rabbit(lab, options={"vhost": "no-such-vhost"}), "not_found",
             "auth", fix=("rabbitmqctl add_vhost no-such-vhost",),
             detail=("NOT_ALLOWED - vhost no-such-vhost not found",)),
        case("rabbitmq", "denied_vhost",
             lambda lab: rabbit(lab, options={"vhost": lab["brokers"]["rabbitmq"]["denied_vhost"]}),
             "access_denied", "auth", fix=("rabbitmqctl set_permissions -p deniedvhost labuser",)),
        case("rabbitmq", "missing_exchange",
             lambda lab: rabbit(lab, options={"vhost": "labvhost", "exchange": "no-such-exchange"}),
             "not_found", "operation", fix=("no-such-exchange", "labvhost"), detail=("NOT_FOUND",)),
        case("rabbitmq", "exchange", lambda lab: rabbit(lab, options={"vhost": "labvhost", "exchange": "amq.topic"}),
             "ok", None),
        case("rabbitmq", "expired_unverified_hostname",
             lambda lab: cfg(lab, "rabbitmq", "tls_expired", tls_verify_hostname=False), "tls_expired", "tls",
             fix=("Renew",)),
    ]


CASES = contract_cases() + protocol_cases()


@pytest.fixture(scope="module")
def matrix_lab(lab: dict) -> Any:
    """The lab, with one Kafka topic for the topic case (deleted afterwards)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": lab["brokers"]["kafka"]["bootstrap"], "log_level": 0})
    for future in admin.create_topics([NewTopic(TOPIC, 1, 1)], operation_timeout=5).values():
        try:
            future.result(10)
        except Exception:  # noqa: BLE001 - it may exist from an earlier run
            pass
    yield lab
    for future in admin.delete_topics([TOPIC], operation_timeout=5).values():
        try:
            future.result(10)
        except Exception:  # noqa: BLE001
            pass


def run(config: BrokerConfig, timeout: float, **kwargs: Any) -> tuple[Diagnosis, float]:
    started = time.monotonic()
    result = diagnose(config, timeout, **kwargs)
    return result, time.monotonic() - started


def assert_shape(d: Diagnosis, config: BrokerConfig) -> None:
    """The CONTRACT.md format: six steps in order, known statuses and cause, texts filled in."""
    body = d.as_dict()
    assert [s["name"] for s in body["steps"]] == list(STEPS)
    assert body["cause"] in CAUSES and body["protocol"] == config.protocol
    assert body["summary"]
    for text in (body["summary"], body["fix"]):
        assert not UNFILLED.search(text), text
    for step in body["steps"]:
        assert step["status"] in ("ok", "failed", "skipped", "not_applicable"), step
        assert ("ms" in step) == (step["status"] != "skipped"), step
    assert d.finished_at is not None and d.target


def assert_steps(d: Diagnosis, failing: str | None, tls: bool) -> None:
    """Steps before the failing one passed (TLS not applicable when off), the failing one failed, later
    ones were skipped; every step passed when nothing failed."""
    at = STEPS.index(failing) if failing else len(STEPS)
    for index, step in enumerate(d.steps):
        if index < at:
            expected = "not_applicable" if (step.name == "tls" and not tls) else "ok"
            assert step.status == expected, f"{step.name}: {step.status} {step.detail}"
            assert step.detail, step.name
        elif index == at:
            assert step.status == "failed" and step.detail, (step.name, step.status)
        else:
            assert step.status == "skipped" and step.ms is None, (step.name, step.status)
    if not tls:
        assert d.step("tls").detail == "TLS is off" or at <= STEPS.index("tls")


@pytest.mark.parametrize("item", CASES, ids=[c.id for c in CASES])
def test_matrix(matrix_lab: dict, item: Case) -> None:
    if item.skip:
        pytest.skip(item.skip)
    config = item.build(matrix_lab)
    d, elapsed = run(config, item.timeout)
    summary = f"{item.id}: {d.cause} {[(s.name, s.status, s.detail) for s in d.steps]}"
    assert d.cause == item.cause, summary
    assert d.ok == (item.cause == "ok"), summary
    tls = config.tls or config.options.get("security_protocol", "").endswith("SSL") or \
        (config.url or "").startswith("pulsar+ssl")
    assert_steps(d, item.step, tls)
    assert_shape(d, config)
    assert elapsed <= item.timeout * ALLOWANCE, f"{item.id} took {elapsed:.3f} s"
    for words in item.detail:
        assert words in d.step(item.step).detail, (words, d.step(item.step).detail)
    if d.ok:
        assert d.fix == "" and "answered every step" in d.summary
        return
    assert d.fix, summary
    for words in item.fix:
        expected = words(matrix_lab, item.protocol) if callable(words) else words
        assert expected in d.fix, f"{item.id}: {expected!r} not in fix: {d.fix}"


def test_healthy_summaries_name_the_broker(matrix_lab: dict) -> None:
    kafka, _ = run(cfg(matrix_lab, "kafka"), TIMEOUT)
    assert kafka.summary == (f"Kafka at {HOST}:{matrix_lab['brokers']['kafka']['plain']} answered every step "
                             f"(cluster {matrix_lab['brokers']['kafka']['cluster_id']}, 1 broker).")
    assert "no topic configured" in kafka.step("operation").detail
    rabbit, _ = run(cfg(matrix_lab, "rabbitmq"), TIMEOUT)
    assert "RabbitMQ 3." in rabbit.summary and "vhost labvhost" in rabbit.summary
    assert "PLAIN" in rabbit.step("handshake").detail and "amq.direct" in rabbit.step("operation").detail
    assert "published 1 confirmed, non-mandatory message to amq.default" in rabbit.step("operation").detail
    mqtt, _ = run(cfg(matrix_lab, "mqtt"), TIMEOUT)
    assert mqtt.step("auth").detail.endswith("anonymous (no username configured; the broker accepts anonymous "
                                             "clients)")
    assert "messaging-console/diagnostics/" in mqtt.step("operation").detail and "QoS 1" in \
        mqtt.step("operation").detail
    nats, _ = run(cfg(matrix_lab, "nats", "tls"), TIMEOUT)
    assert "TLS required" in nats.step("handshake").detail and "_INBOX." in nats.step("operation").detail
    pulsar, _ = run(cfg(matrix_lab, "pulsar", "tls"), TIMEOUT)
    assert pulsar.target == f"pulsar+ssl://{HOST}:{matrix_lab['brokers']['pulsar']['tls']}"
    assert "CONNECTED" in pulsar.step("handshake").detail and "anonymous" in pulsar.step("auth").detail


def test_tls_certificates_are_captured(lab: dict) -> None:
    """The chain the broker presents lands in diagnosis.certificates, also when verification fails."""
    good, _ = run(cfg(lab, "mqtt", "tls"), TIMEOUT)
    assert good.ok and good.certificates[0]["subject"] == "CN=localhost"
    assert {"issuer", "sans", "not_after", "sha256", "status"} <= set(good.certificates[0])
    assert "IP:127.0.0.1" in good.certificates[0]["sans"]
    assert "valid until" in good.step("tls").detail and "host name 127.0.0.1 matches" in good.step("tls").detail
    expired, _ = run(cfg(lab, "rabbitmq", "tls_expired"), TIMEOUT)
    assert expired.certificates[0]["status"] == "expired"
    assert expired.certificates[0]["not_after"][:10] in expired.summary
    wronghost, _ = run(cfg(lab, "nats", "tls_wronghost"), TIMEOUT)
    assert wronghost.certificates[0]["sans"] == ["DNS:wrong.example"]
    untrusted, _ = run(cfg(lab, "kafka", "tls", ca="other_ca"), TIMEOUT)
    assert untrusted.certificates[0]["issuer"] == "CN=Messaging Console Test CA"
    plain, _ = run(cfg(lab, "kafka"), TIMEOUT)
    assert plain.certificates == [] and plain.step("tls").status == "not_applicable"


class Resolver:
    """An injected resolver: counts lookups, fails names under .invalid, never touches the network."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_dns_failure_stops_before_any_client(lab: dict, protocol: str) -> None:
    resolver = Resolver()
    config = replace(cfg(lab, protocol), host="broker.invalid",
                     servers=(("broker.invalid", 9092),) if protocol == "kafka" else (),
                     url="pulsar://broker.invalid:6650" if protocol == "pulsar" else None)
    d, elapsed = run(config, TIMEOUT, resolver=resolver)
    assert d.cause == "dns_failure" and resolver.calls == ["broker.invalid"], (d.cause, resolver.calls)
    assert_steps(d, "dns", tls=False)
    assert "broker.invalid" in d.summary and "broker.invalid" in d.fix and "getent hosts" in d.fix
    assert elapsed < 0.5


def test_dns_resolves_each_host_once_and_a_failing_one_is_a_dead_node(lab: dict) -> None:
    """DNS is per node: the hosts that do not resolve are dead nodes (node_unreachable, dns_failure), each
    asked once, while the live node keeps the diagnosis healthy; with no live node, the first one's
    dns_failure is the cause."""
    resolver = Resolver()
    port = lab["brokers"]["kafka"]["plain"]
    nodes = ((HOST, port), ("kafka-2.invalid", port), ("kafka-3.invalid", port), ("kafka-2.invalid", port + 1))
    d, _ = run(replace(cfg(lab, "kafka"), servers=nodes), TIMEOUT, resolver=resolver)
    assert d.ok and d.cause == "ok", d.as_dict()
    assert sorted(resolver.calls) == ["kafka-2.invalid", "kafka-3.invalid"]
    assert [(w["node"], w["cause"]) for w in d.warnings] == [
        (f"kafka-2.invalid:{port}", "dns_failure"), (f"kafka-3.invalid:{port}", "dns_failure"),
        (f"kafka-2.invalid:{port + 1}", "dns_failure")]
    resolver = Resolver()
    d, _ = run(replace(cfg(lab, "kafka"), servers=nodes[1:]), TIMEOUT, resolver=resolver)
    assert d.cause == "dns_failure" and sorted(resolver.calls) == ["kafka-2.invalid", "kafka-3.invalid"]
    assert "kafka-2.invalid" in d.step("dns").detail and "bootstrap_servers" in d.fix and d.warnings == []


def test_deadline_on_the_silent_port(lab: dict) -> None:
    """Every protocol against the silent port (plain and TLS), timeout 2 s: over within 2.2 s each, run
    side by side."""
    silent = lab["faults"]["silent"]
    configs = [cfg(lab, p, port=silent) for p in PROTOCOLS] + [cfg(lab, p, "tls", port=silent) for p in PROTOCOLS]
    with ThreadPoolExecutor(max_workers=len(configs)) as pool:
        results = list(pool.map(lambda c: run(c, 2.0), configs))
    for config, (d, elapsed) in zip(configs, results):
        assert d.cause == "handshake_timeout", (config.protocol, config.tls, d.cause)
        assert elapsed <= 2.0 * ALLOWANCE, (config.protocol, config.tls, elapsed)
        assert (d.step("tls").status == "failed") == config.tls


FIXES = [
    ("wrong CA → the CA that signed the broker certificate", "kafka",
     lambda lab: cfg(lab, "kafka", "tls", ca="other_ca"), lambda c, lab: replace(c, tls_ca_file=lab["certs"]["ca"]),
     "tls_untrusted"),
    ("wrong CA → right CA (MQTT)", "mqtt", lambda lab: cfg(lab, "mqtt", "tls", ca="other_ca"),
     lambda c, lab: replace(c, tls_ca_file=lab["certs"]["ca"]), "tls_untrusted"),
    ("missing vhost → labvhost", "rabbitmq", lambda lab: cfg(lab, "rabbitmq", options={"vhost": "no-such-vhost"}),
     lambda c, lab: replace(c, options={**c.options, "vhost": lab["brokers"]["rabbitmq"]["vhost"]}), "not_found"),
    ("wrong password → right one (RabbitMQ)", "rabbitmq", lambda lab: cfg(lab, "rabbitmq", password="nope"),
     lambda c, lab: replace(c, password=lab["brokers"]["rabbitmq"]["password"]), "auth_failed"),
    ("wrong password → right one (MQTT)", "mqtt", lambda lab: cfg(lab, "mqtt", "plain_auth", password="nope"),
     lambda c, lab: replace(c, password=lab["brokers"]["mqtt"]["password"]), "auth_failed"),
    ("wrong password → right one (NATS)", "nats", lambda lab: cfg(lab, "nats", "plain_auth", password="nope"),
     lambda c, lab: replace(c, password=lab["brokers"]["nats"]["password"]), "auth_failed"),
    ("TLS off on a TLS port → TLS on", "nats", lambda lab: cfg(lab, "nats", "tls", tls=False),
     lambda c, lab: replace(c, tls=True, tls_ca_file=lab["certs"]["ca"]), "tls_required"),
    ("no client certificate → the lab's client certificate (RabbitMQ)", "rabbitmq",
     lambda lab: cfg(lab, "rabbitmq", "tls_client_cert", login=True),
     lambda c, lab: replace(c, tls_cert_file=lab["certs"]["client_crt"], tls_key_file=lab["certs"]["client_key"]),
     "tls_client_cert_required"),
    ("refused client certificate → one signed by the trusted CA (NATS)", "nats",
     lambda lab: cfg(lab, "nats", "tls_client_cert", tls_cert_file=lab["certs"]["other_client_crt"],
                     tls_key_file=lab["certs"]["other_client_key"]),
     lambda c, lab: replace(c, tls_cert_file=lab["certs"]["client_crt"], tls_key_file=lab["certs"]["client_key"]),
     "tls_client_cert_rejected"),
    ("publish refused → a user with write permission (RabbitMQ)", "rabbitmq",
     lambda lab: cfg(lab, "rabbitmq", username=lab["brokers"]["rabbitmq"]["restricted_user"],
                     password=lab["brokers"]["rabbitmq"]["restricted_password"]),
     lambda c, lab: replace(c, username=lab["brokers"]["rabbitmq"]["username"],
                            password=lab["brokers"]["rabbitmq"]["password"]), "access_denied"),
    ("vhost at its connection limit → a vhost without one", "rabbitmq",
     lambda lab: cfg(lab, "rabbitmq", options={"vhost": lab["brokers"]["rabbitmq"]["limited_vhost"]}),
     lambda c, lab: replace(c, options={**c.options, "vhost": lab["brokers"]["rabbitmq"]["vhost"]}),
     "connection_limit"),
]


@pytest.mark.parametrize("name,protocol,broken,fixed,cause", FIXES, ids=[f[0] for f in FIXES])
def test_following_the_fix_makes_it_green(lab: dict, name: str, protocol: str, broken: Callable,
                                          fixed: Callable, cause: str) -> None:
    config = broken(lab)
    before, _ = run(config, TIMEOUT)
    assert before.cause == cause and not before.ok, before.as_dict()
    after, _ = run(fixed(config, lab), TIMEOUT)
    assert after.ok and after.cause == "ok", after.as_dict()
    assert all(s.status in ("ok", "not_applicable") for s in after.steps)


def test_progress_is_reported_step_by_step_in_the_calling_thread(lab: dict) -> None:
    seen: list[tuple[list[str], str]] = []
    caller = threading.current_thread()

    def on_step(d: Diagnosis) -> None:
        assert threading.current_thread() is caller
        seen.append(([s.status for s in d.steps], d.cause))

    d, _ = run(cfg(lab, "nats"), TIMEOUT, on_step=on_step)
    assert d.ok
    assert seen[0][0] == ["running"] + ["pending"] * 5
    running = [statuses.index("running") for statuses, _ in seen if "running" in statuses]
    assert running == sorted(running) and set(running) == set(range(6))
    assert seen[-1] == (["ok", "ok", "not_applicable", "ok", "ok", "ok"], "ok")


def test_a_failing_callback_never_stops_the_diagnosis(lab: dict) -> None:
    def on_step(_: Diagnosis) -> None:
        raise RuntimeError("database gone")

    d, _ = run(cfg(lab, "mqtt"), TIMEOUT, on_step=on_step)
    assert d.ok


def test_runs_inside_a_running_event_loop(lab: dict) -> None:
    """Playwright keeps an asyncio loop running in the main thread: NATS still works there."""
    async def main() -> Diagnosis:
        return diagnose(cfg(lab, "nats", "plain_auth"), TIMEOUT)

    assert asyncio.run(main()).ok


def test_unknown_protocol_and_unreadable_files_never_raise(lab: dict) -> None:
    d, _ = run(replace(cfg(lab, "nats"), protocol="bogus"), 1.0)
    assert d.cause == "unknown" and all(s.status == "skipped" for s in d.steps) and d.fix
    d, _ = run(replace(cfg(lab, "mqtt", "tls"), tls_ca_file="/nonexistent/ca.pem"), 1.0)
    assert d.cause == "unknown" and d.step("tls").status == "failed" and "TLS files" in d.step("tls").detail


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_nothing_is_leaked(lab: dict) -> None:
    """Threads, sockets, clients and event loops are all released when a diagnosis returns."""
    configs = [cfg(lab, p, listener) for p in PROTOCOLS for listener in ("plain", "tls")] + [
        cfg(lab, "nats", "plain_auth", password="nope"), cfg(lab, "mqtt", port=lab["faults"]["silent"]),
        cfg(lab, "rabbitmq", options={"vhost": "labvhost", "exchange": "nope"}),
        cfg(lab, "kafka", options={"topic": "no-such-topic-xyz"})]
    for config in configs:
        diagnose(config, FAST)
    gc.collect()
    threads, fds = set(threading.enumerate()), _fds()
    for config in configs:
        diagnose(config, FAST)
    gc.collect()
    end = time.monotonic() + 0.5
    while (set(threading.enumerate()) - threads or _fds() - fds) and time.monotonic() < end:
        time.sleep(0.01)
    assert [t.name for t in set(threading.enumerate()) - threads] == []
    leaked = {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in _fds() - fds if os.path.exists(f"/proc/self/fd/{fd}")}
    assert leaked == {}


def test_every_cause_text_renders_with_its_values() -> None:
    """Every cause text, generic or a driver's own, for every protocol and variant, fills all its
    placeholders."""
    from console.diagnostics.causes import all_texts, explain

    facts = {"label": "X", "target": "h:1", "host": "h", "port": 1, "where": "h:1", "timeout": 2.0,
             "tls": True, "username": "u", "login": "user u", "dns_error": "h does not resolve.", "words": "w",
             "issuer": "CN=i", "not_after": "2026-01-01", "not_before": "2025-01-01",
             "days_left": -3, "sans": ["DNS:a"], "server_name": "h", "ca_file": "/ca.pem", "ca_subjects": ["CN=c"],
             "mechanism": "PLAIN", "offered": "SCRAM-SHA-256", "reason_code": 135, "reason": "Not authorized",
             "topic": "t", "vhost": "v", "exchange": "e", "speaks": "AMQP", "identity": "i", "step": "auth",
             "detail": "d", "publish_exchange": "amq.default", "subject": "_INBOX.x", "limit": 0,
             "advertised": "h:2", "advertised_problem": "refuses connections",
             "not_before_at": "2030-01-01 00:00:00 UTC",
             "client_subject": "CN=c", "client_issuer": "CN=i"}
    for key in all_texts():
        cause, _, rest = key.partition("/")
        protocol, _, variant = rest.partition("/")
        for p in [protocol] if protocol else PROTOCOLS:
            summary, fix = explain(cause, {**facts, "protocol": p, "variant": variant or None})
            assert summary and not UNFILLED.search(summary) and not UNFILLED.search(fix), (key, summary, fix)
            assert cause == "ok" or fix, key


# ------------------------------------------------------------------------------- production faults

def _value(lab: dict, protocol: str, value: Any) -> str:
    return value(lab, protocol) if callable(value) else value


@pytest.mark.parametrize("item", FAULTS, ids=[f.id for f in FAULTS])
def test_production_fault(lab: dict, item: Fault) -> None:
    """One (protocol × fault) cell: the diagnosis names the cause at the step where it happened, with a fix
    that names the concrete values; the check ("Test connection") names the same cause (it runs the
    operation step too); both keep their deadline."""
    if item.skip:
        pytest.skip(item.skip)
    assert item.build is not None
    config = item.build(lab)
    d, elapsed = run(config, item.timeout)
    failed = next((s for s in d.steps if s.status == "failed"), None)
    steps = [(s.name, s.status, s.detail) for s in d.steps]
    said = f"{item.id}: {d.cause} at {failed.name if failed else None} {steps}"
    assert d.cause == item.cause, said
    tls = config.tls or str(config.options.get("security_protocol", "")).endswith("SSL")
    assert_steps(d, item.step, tls)
    assert_shape(d, config)
    assert elapsed <= item.timeout * ALLOWANCE, f"{item.id}: diagnosis took {elapsed:.3f} s"
    for words in item.detail:
        assert _value(lab, item.protocol, words) in d.step(item.step).detail, said
    for words in item.fix:
        expected = _value(lab, item.protocol, words)
        assert expected in d.fix or expected in d.summary, f"{item.id}: {expected!r} not in {d.summary} / {d.fix}"
    if item.cause != "ok":
        assert d.fix and d.summary, said
    started = time.monotonic()
    result = get_driver(config.protocol).check(config, item.timeout)
    checked = time.monotonic() - started
    check = "ok" if result.up else result.cause
    assert check == item.check_cause, f"{said}; check: {check} {result.message}"
    assert checked <= item.timeout * ALLOWANCE, f"{item.id}: check took {checked:.3f} s"


def test_production_faults_cover_every_protocol() -> None:
    """Every fault has a cell for every protocol: shown in the lab, or skipped with the reason."""
    names = {f.name.removesuffix("_v311").removesuffix("_exchange") for f in FAULTS} - {"write_permission_proven",
                                                                                        "user_connection_limit"}
    for name in names:
        assert {f.protocol for f in FAULTS if f.name == name} == set(PROTOCOLS), name
    assert all(f.skip or f.build for f in FAULTS)


def test_tls_13_client_certificate_refusal_shows_at_the_first_read(lab: dict) -> None:
    """With TLS 1.3 the broker's refusal of a missing client certificate arrives after the handshake (the
    tls step passes, the first read fails); a TLS 1.2 listener (Mosquitto tls_version tlsv1.2) refuses
    inside the handshake with a bare HANDSHAKE_FAILURE, named by the CertificateRequest it sent. Check and
    diagnosis name the same cause in both."""
    tls13, _ = run(cfg(lab, "mqtt", "tls_client_cert"), TIMEOUT)
    assert "TLSv1.3" in tls13.step("tls").detail and tls13.step("tls").status == "ok"
    assert tls13.cause == "tls_client_cert_required" and tls13.step("handshake").status == "failed"
    config = cfg(lab, "mqtt", port=lab["brokers"]["mqtt"]["tls12_client_cert"], tls=True)
    tls12, _ = run(config, TIMEOUT)
    assert tls12.cause == "tls_client_cert_required" and tls12.step("tls").status == "failed", tls12.as_dict()
    assert "HANDSHAKE_FAILURE" in tls12.step("tls").detail and "tls_cert" in tls12.fix
    assert get_driver("mqtt").check(config, TIMEOUT).cause == "tls_client_cert_required"
    accepted = replace(config, tls_cert_file=lab["certs"]["client_crt"], tls_key_file=lab["certs"]["client_key"])
    ok, _ = run(accepted, TIMEOUT)
    assert ok.ok and "TLSv1.2" in ok.step("tls").detail, ok.as_dict()


def test_a_timeout_in_the_operation_is_named_by_its_step() -> None:
    """A timeout while the operation runs is not a handshake timeout: it becomes unknown with a summary that
    says the operation step ran out of time; a handshake or login timeout stays what it is."""
    timed_out = StepFailed("handshake_timeout", "no SUBACK within the time left", topic="t")
    named = _named_by_step("operation", timed_out)
    assert named.cause == "unknown" and named.facts["variant"] == "operation_timeout" and named.facts["topic"] == "t"
    assert _named_by_step("handshake", timed_out) is timed_out and _named_by_step("auth", timed_out) is timed_out
    summary, fix = explain(named.cause, {"protocol": "mqtt", "where": "127.0.0.1:11883", "timeout": 3.0,
                                         "detail": named.message, **named.facts})
    assert summary.startswith("The operation step ran out of time: MQTT at 127.0.0.1:11883") and "3 s" in summary
    assert "handshake" not in summary and fix


def test_the_rabbitmq_write_probe_leaves_nothing_in_a_queue(lab: dict) -> None:
    """The operation's publish goes to the configured exchange with a routing key nothing binds; even a
    queue bound with "#" (which matches every key) keeps nothing, because the message expires at once."""
    r = lab["brokers"]["rabbitmq"]
    params = pika.ConnectionParameters(host=HOST, port=r["plain"], virtual_host=r["vhost"],
                                       credentials=pika.PlainCredentials(r["username"], r["password"]),
                                       socket_timeout=TIMEOUT, stack_timeout=TIMEOUT, connection_attempts=1)
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
        channel.queue_bind(queue, "amq.topic", "#")
        d, _ = run(cfg(lab, "rabbitmq", options={"vhost": r["vhost"], "exchange": "amq.topic"}), TIMEOUT)
        assert d.ok and "published 1 confirmed, non-mandatory message to amq.topic" in d.step("operation").detail
        method, _, _ = channel.basic_get(queue, auto_ack=True)
        assert method is None
    finally:
        connection.close()
