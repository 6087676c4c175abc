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
from dataclasses import replace
from typing import Callable

import pytest

from console.brokers import DRIVERS, PROTOCOLS, check_all, driver_class, get_driver
from console.brokers.base import CAUSES, TARGET_CAUSES, BrokerConfig, CheckResult, Driver
from console.diagnostics.engine import diagnose
from tests.brokers.drivertest import SLOW, TIMEOUT, Case, case, config, contract_cases, harnesses, listener
from tests.production_faults import FAULTS

HARNESSES = harnesses()
TIMING_ALLOWANCE = 1.1
NATIVE_SETTLE = 0.2


def driver_cases() -> list[Case]:
    """Each driver's own cases, beyond the contract (from its harness)."""
    return [c for h in HARNESSES.values() for c in h.cases()]


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
        for key in HARNESSES[item.protocol].identity:
            assert result.identity.get(key) not in (None, ""), f"{item.id}: identity {result.identity}"
        for key, value in item.identity.items():
            assert result.identity[key] == value
    else:
        assert result.message and not result.identity


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_identity_names_the_broker(lab: dict, protocol: str) -> None:
    HARNESSES[protocol].assert_identity(lab, lambda cfg: run_check(cfg, TIMEOUT)[0])


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
    names the missing resource as the diagnosis does); each harness lists its own."""
    return [c for h in HARNESSES.values() for c in h.agreement_cases()]


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
