"""The step runner of a diagnosis: dns → tcp → tls → handshake → auth → operation, within one deadline.

The first four steps are shared by every protocol and use raw probes (console/diagnostics/steps.py); the
protocol's driver (console/brokers/<protocol>.py) then logs in and runs one harmless operation with the
real client library. The first failure ends the run: later steps are skipped, and the
failure's cause code becomes the diagnosis's cause, with a summary and a fix from causes.py filled with
the concrete values the steps found.

`diagnose` never raises, keeps the deadline (a library's clean-up may add a little), reports progress
after every step change, and closes every socket, client, thread and event loop it opened before it
returns.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any, Callable

from ..brokers import get_driver
from ..brokers.base import BrokerConfig, CheckFailed, Deadline, Driver, Passed, StepFailed, one_line
from ..checks import Resolver, system_resolver, target_of
from . import causes
from .base import Diagnosis, StepCallback
from .steps import TransportSteps, host_port

log = logging.getLogger(__name__)

_OUT_OF_TIME = {"dns": "dns_failure", "tcp": "connect_timeout"}


def diagnose(config: BrokerConfig, timeout: float, *, resolver: Resolver = system_resolver,
             on_step: StepCallback | None = None) -> Diagnosis:
    """Diagnose `config` step by step within `timeout` seconds; `on_step(diagnosis)` is called in this
    thread after every step change. Never raises."""
    return _Run(config, timeout, resolver, on_step).execute()


def _named_by_step(step: str, failed: StepFailed) -> StepFailed:
    """A timeout while the operation runs is not a handshake timeout: `unknown`, with a summary that
    names the operation step as the one that ran out of time."""
    if step != "operation" or failed.cause != "handshake_timeout":
        return failed
    facts = {**failed.facts, "variant": "operation_timeout"}
    return StepFailed("unknown", failed.message, **facts)


class _Run:
    """One diagnosis in progress."""

    def __init__(self, config: BrokerConfig, timeout: float, resolver: Resolver,
                 on_step: StepCallback | None) -> None:
        self.deadline = Deadline(timeout)
        self.config = config
        self.resolver = resolver
        self.on_step = on_step
        self.driver: Driver | None = None
        self.diagnosis = Diagnosis(config.protocol, target=target_of(config))
        host, port = config.addresses[0]
        self.facts: dict[str, Any] = {
            "protocol": config.protocol, "label": causes.label(config.protocol),
            "target": self.diagnosis.target, "host": host, "port": port, "where": host_port(host, port),
            "timeout": timeout, "tls": config.tls, "username": config.username,
        }

    def execute(self) -> Diagnosis:
        """Run every step in order, stop at the first failure, conclude; the finished diagnosis."""
        failure: StepFailed | None = None
        steps: dict[str, Callable[[], Passed]] = {}
        try:
            try:
                steps = self._steps()
            except Exception as exc:  # noqa: BLE001 - a missing library only affects its own protocol
                failure = StepFailed("unknown", f"the {self.config.protocol} client library is not usable: "
                                                f"{type(exc).__name__}: {exc}")
                self.facts["step"] = "set-up"
            for step in self.diagnosis.steps:
                if failure is not None:
                    step.status = "skipped"
                    continue
                step.status = "running"
                self._notify()
                started = time.monotonic()
                try:
                    outcome = self._guarded(step.name, steps[step.name])
                    step.status, step.detail, step.data = outcome.status, outcome.detail, outcome.data
                except StepFailed as failed:
                    failure = _named_by_step(step.name, failed)
                    step.status, step.detail = "failed", failed.message
                    self.facts["step"] = step.name
                step.ms = (time.monotonic() - started) * 1000.0
                self._notify()
        finally:
            self._close()
        self._conclude(failure)
        self._notify()
        return self.diagnosis

    def _steps(self) -> dict[str, Callable[[], Passed]]:
        driver = self.driver = get_driver(self.config.protocol).begin(self.config)
        probes = TransportSteps(driver, self.deadline, self.resolver, self.facts, self.diagnosis)
        self.facts["tls"] = driver.config.tls
        return {"dns": probes.dns, "tcp": probes.tcp, "tls": probes.tls, "handshake": probes.handshake,
                "auth": lambda: driver.auth(self.deadline, probes),
                "operation": lambda: driver.operation(self.deadline, probes)}

    def _guarded(self, name: str, run: Callable[[], Passed]) -> Passed:
        if self.deadline.remaining() < 0.001:
            raise StepFailed(_OUT_OF_TIME.get(name, "handshake_timeout"),
                             f"no time left for the {name} step: the earlier steps used the whole "
                             f"{self.deadline.timeout:g} s")
        try:
            return run()
        except StepFailed:
            raise
        except CheckFailed as failed:
            raise StepFailed(failed.cause, failed.message) from None
        except Exception as exc:  # noqa: BLE001 - a diagnosis never raises
            log.debug("diagnosis step %s failed", name, exc_info=True)
            raise StepFailed("unknown", one_line(f"{type(exc).__name__}: {exc}")) from None

    def _notify(self) -> None:
        if self.on_step is None:
            return
        try:
            self.on_step(self.diagnosis)
        except Exception:  # noqa: BLE001 - a failing observer never stops the diagnosis
            log.warning("diagnosis progress callback failed", exc_info=True)

    def _close(self) -> None:
        if self.driver is None:
            return
        try:
            self.driver.close()
        except Exception:  # noqa: BLE001 - clean-up never hides the diagnosis
            log.warning("closing the %s diagnosis failed", self.config.protocol, exc_info=True)

    def _conclude(self, failure: StepFailed | None) -> None:
        d = self.diagnosis
        facts = {**self.facts, **(self.driver.facts if self.driver else {})}
        if failure is None:
            assert self.driver is not None
            facts["identity"] = self.driver.identity()
            d.ok, d.cause = True, "ok"
        else:
            facts.update({k: v for k, v in failure.facts.items() if v is not None})
            facts["detail"] = failure.message
            d.ok, d.cause = False, failure.cause
        d.summary, d.fix = causes.explain(d.cause, facts)
        d.finished_at = dt.datetime.now(dt.timezone.utc)
