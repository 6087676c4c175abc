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
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, Callable

from ..brokers import get_driver
from ..brokers.base import BrokerConfig, CheckFailed, Deadline, Driver, Passed, StepFailed, one_line
from ..brokers.nodes import GRACE, NODE_SHARE, node_configs, node_name, parse_node, single, warnings_for
from ..checks import Resolver, each_address, memoized, system_resolver, target_of
from . import causes
from .base import Diagnosis, StepCallback
from .steps import TransportSteps, host_port

log = logging.getLogger(__name__)

_OUT_OF_TIME = {"dns": "dns_failure", "tcp": "connect_timeout"}


def diagnose(config: BrokerConfig, timeout: float, *, resolver: Resolver = system_resolver,
             on_step: StepCallback | None = None) -> Diagnosis:
    """Diagnose `config` step by step within `timeout` seconds, every node of a cluster setting side by
    side (the first in this thread, whose progress `on_step(diagnosis)` is told after every step change),
    then each broker the cluster advertises that is not configured. Never raises."""
    deadline = Deadline(timeout)
    resolver = memoized(resolver)
    configs = node_configs(each_address(config, timeout, resolver))   # each address of a name is a node
    names = [node_name(*c.addresses[0]) for c in configs]
    each = deadline if len(configs) == 1 else Deadline(timeout * NODE_SHARE, start=deadline.start)
    runs = {name: _Run(c, timeout, resolver, on_step if i == 0 else None, each)
            for i, (name, c) in enumerate(zip(names, configs))}
    found = _run_all(runs, deadline)
    advertised = [n for n in dict.fromkeys(
        a for name in names if found[name].ok for a in runs[name].facts_found.get("advertised") or ())
        if n not in runs]
    if advertised and deadline.remaining() > 0.05:
        late = Deadline(deadline.remaining() * NODE_SHARE)
        extra = {n: _Run(single(config, *parse_node(n)), timeout, resolver, None, late) for n in advertised}
        found.update(_run_all(extra, deadline, inline_first=False))
    else:
        advertised = []
    merged = merge(config, names, advertised, found)
    if on_step is not None and (len(names) > 1 or advertised):
        _Run._tell(on_step, merged)
    return merged


def merge(config: BrokerConfig, names: list[str], advertised: list[str],
          found: dict[str, Diagnosis]) -> Diagnosis:
    """One diagnosis from the diagnoses per node: the first healthy configured node's, with every node
    and a `node_unreachable` warning per failed one; else the first configured node's."""
    live = next((found[n] for n in names if found[n].ok), None)
    main = live or found[names[0]]
    main.target = target_of(config)
    main.nodes = [_node(n, found[n]) for n in names] + [_node(n, found[n], advertised=True) for n in advertised]
    seen = {c["sha256"] for c in main.certificates}
    for d in found.values():
        for cert in d.certificates:
            if cert["sha256"] not in seen:
                seen.add(cert["sha256"])
                main.certificates.append(cert)
    if live is not None and len(main.nodes) > 1:
        main.warnings = warnings_for(
            {"node": n["node"], "status": "up" if n["ok"] else "down", "cause": n["cause"],
             "message": n["summary"]} for n in main.nodes)
        up = sum(1 for n in main.nodes if n["ok"])
        if main.warnings:
            dead = ", ".join(f"{w['node']} ({w['cause']})" for w in main.warnings)
            main.summary += f" {up} of {len(main.nodes)} nodes answered; not {dead}."
    return main


def _node(name: str, d: Diagnosis, *, advertised: bool = False) -> dict[str, Any]:
    failed = next((s.name for s in d.steps if s.status == "failed"), None)
    entry: dict[str, Any] = {"node": name, "ok": d.ok, "cause": d.cause, "summary": d.summary, "step": failed}
    if advertised:
        entry["advertised"] = True
    return entry


def _run_all(runs: dict[str, _Run], deadline: Deadline, *, inline_first: bool = True) -> dict[str, Diagnosis]:
    """Execute every run: the first in this thread (when `inline_first`), the others side by side; a run
    still going at the deadline (plus a grace) is reported as unfinished."""
    names = list(runs)
    if len(names) == 1 and inline_first:
        return {names[0]: runs[names[0]].execute()}
    inline = names[0] if inline_first else None
    pool = ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="diagnosis-node")
    finished = False
    try:
        futures = {n: pool.submit(runs[n].execute) for n in names if n != inline}
        out = {inline: runs[inline].execute()} if inline else {}
        finished = not wait(list(futures.values()), timeout=deadline.remaining() + GRACE).not_done
        for name, future in futures.items():
            out[name] = future.result() if future.done() else _unfinished(runs[name])
    finally:
        pool.shutdown(wait=finished, cancel_futures=True)
    return {n: out[n] for n in names}


def _unfinished(run: _Run) -> Diagnosis:
    d = Diagnosis(run.config.protocol, target=run.diagnosis.target, cause="unknown",
                  summary="The diagnosis of this node did not finish within its timeout.")
    d.finished_at = dt.datetime.now(dt.UTC)
    return d


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
                 on_step: StepCallback | None, deadline: Deadline | None = None) -> None:
        self.deadline = deadline or Deadline(timeout)
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
        if self.on_step is not None:
            self._tell(self.on_step, self.diagnosis)

    @staticmethod
    def _tell(on_step: StepCallback, diagnosis: Diagnosis) -> None:
        try:
            on_step(diagnosis)
        except Exception:  # noqa: BLE001 - a failing observer never stops the diagnosis
            log.warning("diagnosis progress callback failed", exc_info=True)

    @property
    def facts_found(self) -> dict[str, Any]:
        """The driver's facts after the run."""
        return self.driver.facts if self.driver else {}

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
        d.finished_at = dt.datetime.now(dt.UTC)
