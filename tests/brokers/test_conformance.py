"""One conformance suite for every broker driver, against its real broker in the lab.

In the style of go-cloud's drivertest: the same contract cases run for all five drivers (up with identity,
refused, silent, SYN-dropped, TLS good / wrong CA / system store / expired / host-name mismatch and
mismatch with verification off, TLS against plaintext and plaintext against TLS, bad credentials, another
protocol on the port), then each driver's own cases. Every check must give its cause, finish within its
timeout + 10 %, never raise, and leave no Python thread, native thread or file descriptor behind. Then
the same cases once more through both faces of the driver: the check and the step-wise diagnosis must
name the same cause for the same fault. The one
allowance: pulsar-client's io thread closes its epoll and timer descriptors a few milliseconds after
`Client.shutdown()` has returned, so descriptors and native threads get up to NATIVE_SETTLE seconds to go.
Uses the session `lab` fixture (tests/lab_fixtures.py, loaded by tests/conftest.py).
"""
from __future__ import annotations

import gc
import os
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import pytest

from console.brokers import DRIVERS, PROTOCOLS, check_all, driver_class, get_driver
from console.brokers.base import CAUSES, TARGET_CAUSES, BrokerConfig, CheckResult, Driver
from console.diagnostics.engine import diagnose
from tests.production_faults import FAULTS

HOST = "127.0.0.1"
TIMEOUT = 3.0
SLOW = 2.0
TLS_LISTENERS = {"tls", "tls_expired", "tls_wronghost", "tls_client_cert"}
NEEDS_LOGIN = {
    "kafka": set(),
    "pulsar": set(),
    "mqtt": {"plain_auth", "tls"},
    "nats": {"plain_auth", "tls"},
    "rabbitmq": {"plain", "tls", "tls_expired", "tls_wronghost"},
}
IDENTITY = {
    "kafka": ("cluster_id", "controller", "brokers"),
    "pulsar": ("service_url", "topic", "partitions"),
    "mqtt": ("protocol_version", "session_present"),
    "nats": ("server_name", "server_id", "version"),
    "rabbitmq": ("product", "version", "cluster_name", "vhost"),
}
TIMING_ALLOWANCE = 1.1
NATIVE_SETTLE = 0.2


def config(lab: dict, protocol: str, listener: str = "plain", *, port: int | None = None,
           tls: bool | None = None, ca: str | None = "ca", login: bool | None = None,
           **changes: Any) -> BrokerConfig:
    """A BrokerConfig for one lab listener (or a raw port), with the driver's usual options."""
    broker = lab["brokers"][protocol]
    port = port or broker[listener]
    tls = listener in TLS_LISTENERS if tls is None else tls
    login = listener in NEEDS_LOGIN[protocol] if login is None else login
    options: dict[str, Any] = {}
    servers: tuple[tuple[str, int], ...] = ()
    url = None
    if protocol == "kafka":
        servers = ((HOST, port),)
        options = {"security_protocol": "SSL" if tls else "PLAINTEXT", "client_id": "conformance"}
    elif protocol == "pulsar":
        url = f"pulsar{'+ssl' if tls else ''}://{HOST}:{port}"
        options = {"topic": "persistent://public/default/conformance"}
    elif protocol == "mqtt":
        options = {"protocol_version": "3.1.1", "client_id": "conformance", "keepalive": 30}
    elif protocol == "nats":
        options = {"name": "conformance"}
    elif protocol == "rabbitmq":
        options = {"vhost": broker["vhost"]}
    options.update(changes.pop("options", {}))
    base = BrokerConfig(
        protocol=protocol, host=HOST, port=port, servers=servers, url=url, tls=tls,
        tls_ca_file=lab["certs"][ca] if (tls and ca) else None,
        username=broker.get("username") if login else None,
        password=broker.get("password") if login else None, options=options)
    return replace(base, **changes)


Build = Callable[[dict, str], BrokerConfig]


@dataclass(frozen=True)
class Case:
    """One case: how to build the configuration, the outcome it must give, and its timeout."""

    protocol: str
    name: str
    build: Build
    expect: frozenset[str]
    timeout: float = TIMEOUT
    skip: str | None = None
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.protocol}-{self.name}"


def case(protocol: str, name: str, build: Build, *expect: str, timeout: float = TIMEOUT,
         skip: str | None = None, **identity: Any) -> Case:
    return Case(protocol, name, build, frozenset(expect), timeout, skip, identity)


def at_fault(kind: str) -> Build:
    return lambda lab, p: config(lab, p, port=lab["faults"][kind])


def listener(name: str, **kwargs: Any) -> Build:
    return lambda lab, p: config(lab, p, name, **kwargs)


def kafka_sasl(port_key: str) -> Build:
    return lambda lab, p: config(lab, p, port_key, username="anyone", password="anything", options={
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256"})


def bad_login(lab: dict, protocol: str) -> BrokerConfig:
    """A login the broker refuses: a wrong password (any SCRAM login for Tansu)."""
    if protocol == "kafka":
        return kafka_sasl("sasl")(lab, protocol)
    name = {"mqtt": "plain_auth", "nats": "plain_auth"}.get(protocol, "plain")
    return config(lab, protocol, name, login=True, password="wrong-pass")


def other_protocol(lab: dict, protocol: str) -> BrokerConfig:
    """The driver's settings pointed at a port of another protocol."""
    broker = {"kafka": "rabbitmq", "pulsar": "mqtt", "mqtt": "rabbitmq", "nats": "mqtt",
              "rabbitmq": "nats"}[protocol]
    return config(lab, protocol, port=lab["brokers"][broker]["plain"])


NO_BAD_LOGIN = {"pulsar": "pulsar-lite accepts any credentials (junk tokens and basic auth succeed), "
                          "so no bad-credentials case can fail here; refused tokens are tested through the "
                          "token front over pulsar-lite in tests/brokers/test_token_front.py"}
CONTRACT: list[tuple[str, Build, tuple[str, ...], float]] = [
    ("up", listener("plain"), ("up",), TIMEOUT),
    ("refused", at_fault("refused"), ("connection_refused",), TIMEOUT),
    ("silent", at_fault("silent"), ("connect_timeout", "handshake_timeout"), SLOW),
    ("syn_dropped", at_fault("syn_drop"), ("connect_timeout",), SLOW),
    ("tls", listener("tls"), ("up",), TIMEOUT),
    ("tls_wrong_ca", listener("tls", ca="other_ca"), ("tls_untrusted",), TIMEOUT),
    ("tls_system_store", listener("tls", ca=None), ("tls_untrusted",), TIMEOUT),
    ("tls_expired", listener("tls_expired"), ("tls_expired",), TIMEOUT),
    ("tls_wronghost", listener("tls_wronghost"), ("tls_hostname_mismatch",), TIMEOUT),
    ("tls_wronghost_unverified", listener("tls_wronghost", tls_verify_hostname=False), ("up",), TIMEOUT),
    ("tls_to_plain", listener("plain", tls=True), ("tls_not_offered",), SLOW),
    ("plain_to_tls", listener("tls", tls=False), ("tls_required",), TIMEOUT),
    ("bad_password", bad_login, ("auth_failed",), TIMEOUT),
    ("wrong_protocol", other_protocol, ("protocol_mismatch",), TIMEOUT),
]


def contract_cases() -> list[Case]:
    """The cases every driver must pass (a NATS client waits for the server's INFO before it can tell
    another protocol, so its wrong-protocol case runs with a 1 s timeout to keep the suite fast)."""
    return [case(p, name, build, *expect,
                 timeout=1.0 if (p, name) == ("nats", "wrong_protocol") else timeout,
                 skip=NO_BAD_LOGIN.get(p) if name == "bad_password" else None)
            for p in PROTOCOLS for name, build, expect, timeout in CONTRACT]


V5 = {"protocol_version": "5"}


def driver_cases() -> list[Case]:
    """Each driver's own cases, beyond the contract."""
    def client_cert(lab, p):
        return config(lab, p, "tls_client_cert", tls_cert_file=lab["certs"]["client_crt"],
                      tls_key_file=lab["certs"]["client_key"])
    return [
        case("kafka", "sasl_to_plain", kafka_sasl("plain"), "sasl_mechanism_unsupported"),
        case("kafka", "plain_to_sasl", listener("sasl"), "auth_failed"),
        case("kafka", "sasl_success", kafka_sasl("sasl"), "up",
             skip="Tansu 0.6.0 stores no SCRAM credentials (dynostore no-ops), so every SASL login to the "
                  "lab's own Tansu fails with unknown-user; successful logins are tested through the SASL front "
                  "over Tansu in tests/brokers/test_sasl_front.py"),
        case("pulsar", "url_from_host_port", listener("plain", url=None), "up"),
        case("pulsar", "junk_token_accepted", listener("plain", token="junk"), "up"),
        case("mqtt", "v5", listener("plain", options=V5), "up", protocol_version="5"),
        case("mqtt", "v5_tls", listener("tls", options=V5), "up"),
        case("mqtt", "login", listener("plain_auth"), "up"),
        case("mqtt", "no_credentials", listener("plain_auth", login=False), "auth_failed"),
        case("mqtt", "v5_bad_password", listener("plain_auth", password="wrong-pass", options=V5),
             "auth_failed"),
        case("mqtt", "client_cert", client_cert, "up"),
        case("mqtt", "client_cert_missing", listener("tls_client_cert"), "tls_client_cert_required"),
        case("mqtt", "v5_client_cert_missing", listener("tls_client_cert", options=V5), "tls_client_cert_required"),
        case("nats", "login", listener("plain_auth"), "up"),
        case("nats", "no_credentials", listener("plain_auth", login=False), "auth_failed"),
        case("nats", "token", lambda lab, p: config(lab, p, "plain_token", token=lab["brokers"][p]["token"]),
             "up"),
        case("nats", "bad_token", listener("plain_token", token="wrong-token"), "auth_failed"),
        case("rabbitmq", "missing_vhost", listener("plain", options={"vhost": "no-such-vhost"}), "not_found"),
        case("rabbitmq", "denied_vhost",
             lambda lab, p: config(lab, p, options={"vhost": lab["brokers"][p]["denied_vhost"]}),
             "access_denied"),
        case("rabbitmq", "expired_unverified_hostname", listener("tls_expired", tls_verify_hostname=False),
             "tls_expired"),
    ]


def fault_cases() -> list[Case]:
    """The production faults of tests/production_faults.py (mutual TLS, a certificate not yet valid, an
    accept-and-close port, unreachable advertised brokers, connection limits, restricted users), as the
    check must answer them: the diagnosis's cause (the check runs the operation step too)."""
    return [case(f.protocol, f"fault_{f.name}", (lambda lab, p, f=f: f.build(lab)) if f.build else listener("plain"),
                 "up" if f.check_cause == "ok" else f.check_cause, skip=f.skip)
            for f in FAULTS]


CASES = contract_cases() + driver_cases()
CHECKED = CASES + fault_cases()   # tests/diagnostics/test_diagnostics_matrix.py asserts their agreement


def run_check(cfg: BrokerConfig, timeout: float) -> tuple[CheckResult, float]:
    started = time.monotonic()
    result = get_driver(cfg.protocol).check(cfg, timeout)
    return result, time.monotonic() - started


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _native_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _describe(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


def _settled(condition: Callable[[], bool], within: float = NATIVE_SETTLE) -> bool:
    end = time.monotonic() + within
    while not condition() and time.monotonic() < end:
        time.sleep(0.005)
    return condition()


class Resources:
    """Python threads, file descriptors and native threads of this process, to compare after a check."""

    def __init__(self) -> None:
        gc.collect()
        self.threads, self.fds, self.native = set(threading.enumerate()), _fds(), _native_threads()

    def assert_released(self, what: str) -> None:
        gc.collect()
        assert [t.name for t in set(threading.enumerate()) - self.threads] == [], what
        _settled(lambda: not (_fds() - self.fds) and _native_threads() <= self.native)
        assert {fd: _describe(fd) for fd in _fds() - self.fds} == {}, what
        after = _native_threads()
        assert after <= self.native, f"{what}: native threads {self.native} -> {after}"


@pytest.fixture(scope="module")
def warm(lab: dict) -> dict:
    """One successful check per protocol first: one-time library set-up is not a leak."""
    for protocol in PROTOCOLS:
        get_driver(protocol).check(config(lab, protocol), TIMEOUT)
    return lab


@pytest.mark.parametrize("item", CHECKED, ids=[c.id for c in CHECKED])
def test_contract(warm: dict, item: Case) -> None:
    if item.skip:
        pytest.skip(item.skip)
    cfg = item.build(warm, item.protocol)
    before = Resources()
    result, elapsed = run_check(cfg, item.timeout)
    before.assert_released(item.id)
    outcome = "up" if result.up else result.cause
    assert outcome in item.expect, f"{item.id}: {result.as_dict()}"
    assert elapsed <= item.timeout * TIMING_ALLOWANCE, f"{item.id} took {elapsed:.3f} s"
    assert result.cause in CAUSES and result.protocol == item.protocol
    assert "\n" not in result.message
    assert result.latency_ms is not None and 0 < result.latency_ms <= elapsed * 1000 + 1
    if result.up:
        assert result.cause == "ok" and not result.message
        for key in IDENTITY[item.protocol]:
            assert result.identity.get(key) not in (None, ""), f"{item.id}: identity {result.identity}"
        for key, value in item.identity.items():
            assert result.identity[key] == value
    else:
        assert result.message and not result.identity


def test_identity_names_the_broker(lab: dict) -> None:
    kafka, _ = run_check(config(lab, "kafka"), TIMEOUT)
    assert kafka.identity["cluster_id"] == lab["brokers"]["kafka"]["cluster_id"]
    assert kafka.identity["brokers"] >= 1 and kafka.identity["controller"].startswith(HOST)
    rabbit, _ = run_check(config(lab, "rabbitmq"), TIMEOUT)
    assert rabbit.identity["product"] == "RabbitMQ" and rabbit.identity["vhost"] == "labvhost"
    mqtt_v5, _ = run_check(config(lab, "mqtt", options={"protocol_version": "5"}), TIMEOUT)
    assert mqtt_v5.identity["protocol_version"] == "5" and mqtt_v5.identity["session_present"] is False
    nats, _ = run_check(config(lab, "nats", "tls"), TIMEOUT)
    assert nats.identity["tls"] is True and nats.identity["version"].count(".") == 2
    pulsar, _ = run_check(config(lab, "pulsar", "tls"), TIMEOUT)
    assert pulsar.identity["service_url"] == f"pulsar+ssl://{HOST}:{lab['brokers']['pulsar']['tls']}"


def test_unreadable_tls_files_never_raise(lab: dict) -> None:
    for protocol in PROTOCOLS:
        cfg = replace(config(lab, protocol, "tls"), tls_ca_file="/nonexistent/ca.pem")
        result, elapsed = run_check(cfg, TIMEOUT)
        assert result.status == "down" and result.cause in CAUSES, result.as_dict()
        assert elapsed <= TIMEOUT * TIMING_ALLOWANCE


def test_check_all_on_silent_ports_keeps_the_deadline_and_leaks_nothing(warm: dict) -> None:
    """All five against the silent port at once, timeout=2: over in at most 2.2 s, every thread (the
    pool's too) and file descriptor released when it returns."""
    before = Resources()
    started = time.monotonic()
    results = check_all({p: config(warm, p, port=warm["faults"]["silent"]) for p in PROTOCOLS}, SLOW)
    elapsed = time.monotonic() - started
    assert elapsed <= SLOW * TIMING_ALLOWANCE, elapsed
    assert {r.cause for r in results.values()} <= {"connect_timeout", "handshake_timeout"}, results
    before.assert_released("check_all")


def test_check_all_runs_concurrently(lab: dict) -> None:
    """Five checks, one against the silent port: the whole call takes about as long as that one."""
    configs = {p: config(lab, p) for p in PROTOCOLS}
    started = time.monotonic()
    results = check_all(configs, TIMEOUT)
    fast = time.monotonic() - started
    assert all(results[p].up for p in PROTOCOLS), {p: r.as_dict() for p, r in results.items()}
    configs["kafka"] = config(lab, "kafka", port=lab["faults"]["silent"])
    started = time.monotonic()
    results = check_all(configs, SLOW)
    elapsed = time.monotonic() - started
    assert results["kafka"].cause in ("connect_timeout", "handshake_timeout")
    assert all(results[p].up for p in PROTOCOLS if p != "kafka")
    assert SLOW * 0.9 <= elapsed <= SLOW * TIMING_ALLOWANCE, elapsed
    assert fast < 1.0


def test_check_all_reports_an_unknown_protocol_without_raising(lab: dict) -> None:
    assert check_all({}, TIMEOUT) == {}
    results = check_all({"bogus": replace(config(lab, "nats"), protocol="bogus")}, 1.0)
    assert results["bogus"].status == "down" and results["bogus"].cause == "unknown"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_one_registered_driver_per_protocol(protocol: str) -> None:
    """The registry line names a Driver of that protocol, whose own cause texts name real causes."""
    module, _, name = DRIVERS[protocol].partition(":")
    assert module == f"console.brokers.{protocol}"
    cls = driver_class(protocol)
    assert issubclass(cls, Driver) and cls.__name__ == name and cls.protocol == protocol
    assert cls.label and 0 < cls.default_port < 65536 and cls.wire().greeting.payload
    assert {key.split("/")[0] for key in cls.texts} <= set(CAUSES), cls.texts.keys()
    assert isinstance(get_driver(protocol), cls) and get_driver(protocol) is not get_driver(protocol)


def agreement_cases() -> list[Case]:
    """Faults beyond the check's contract that the lab shows: logins missing on listeners that need one,
    another protocol behind TLS (where a check once said unknown or handshake_timeout and the diagnosis
    protocol_mismatch), and resources only the operation step touches (the check runs that step too, so it
    names the missing resource as the diagnosis does)."""
    return [
        case("nats", "tls_no_credentials", listener("tls", login=False), "auth_failed"),
        case("nats", "token_listener_with_password", listener("plain_token", login=True), "auth_failed"),
        case("rabbitmq", "guest_login", listener("plain", login=False), "auth_failed"),
        case("rabbitmq", "tls_bad_password", listener("tls", password="wrong-pass"), "auth_failed"),
        case("mqtt", "tls_bad_password", listener("tls", password="wrong-pass"), "auth_failed"),
        case("kafka", "tls_expired_unverified_hostname", listener("tls_expired", tls_verify_hostname=False),
             "tls_expired"),
        case("rabbitmq", "another_protocol_behind_tls",
             lambda lab, p: config(lab, p, port=lab["brokers"]["mqtt"]["tls"], tls=True), "protocol_mismatch"),
        case("nats", "another_protocol_behind_tls",
             lambda lab, p: config(lab, p, port=lab["brokers"]["rabbitmq"]["tls"], tls=True), "protocol_mismatch"),
        case("mqtt", "another_protocol_behind_tls",
             lambda lab, p: config(lab, p, port=lab["brokers"]["rabbitmq"]["tls"], tls=True), "protocol_mismatch"),
        case("kafka", "missing_topic", listener("plain", options={"topic": "no-such-topic-conformance"}),
             "not_found"),
        case("rabbitmq", "missing_exchange", listener("plain", options={"vhost": "labvhost",
                                                                          "exchange": "no-such-exchange"}),
             "not_found"),
    ]


AGREEMENT = CASES + agreement_cases()


@pytest.mark.parametrize("item", AGREEMENT, ids=[c.id for c in AGREEMENT])
def test_check_and_diagnosis_name_the_same_cause(warm: dict, item: Case) -> None:
    """"Test connection" and "Diagnose" agree: the driver's check and its diagnosis of one fault give one
    cause, the one the case expects, each within its timeout + 10 %; the check runs the operation step
    too, so a refused or missing target (TARGET_CAUSES) is its cause as well, while any other failure of
    that step leaves the check up."""
    if item.skip:
        pytest.skip(item.skip)
    cfg = item.build(warm, item.protocol)
    result, checked = run_check(cfg, item.timeout)
    started = time.monotonic()
    diagnosis = diagnose(cfg, item.timeout)
    diagnosed = time.monotonic() - started
    check = "ok" if result.up else result.cause
    failed = next((s.name for s in diagnosis.steps if s.status == "failed"), None)
    said = (f"{item.id}: check {check} ({result.message}), diagnosis {diagnosis.cause} at {failed} "
            f"({diagnosis.summary})")
    assert diagnosis.cause in {"ok" if e == "up" else e for e in item.expect}, said
    if failed == "operation" and diagnosis.cause not in TARGET_CAUSES:
        assert check == "ok", said
    else:
        assert check == diagnosis.cause, said
    assert checked <= item.timeout * TIMING_ALLOWANCE and diagnosed <= item.timeout * TIMING_ALLOWANCE, \
        (item.id, checked, diagnosed)
