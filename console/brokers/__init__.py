"""Protocol drivers, one module per protocol (its check and its diagnosis), in one registry imported
lazily so that a missing client library only affects its own protocol; beside each driver its spec
(`<protocol>_spec.py`: fields, node list, address, TLS, rules), which imports no client library and is
what the settings model, the checks and the lint loop over.

Adding a protocol: one spec module (a `ProtocolSpec` of console/brokers/spec.py), one driver module (a
`Driver` of console/brokers/base.py naming that spec) and one line in SPECS.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, wait
from typing import Mapping

from werkzeug.routing import BaseConverter

from ..lazy import load
from . import kafka_spec, mqtt_spec, nats_spec, pulsar_spec, rabbitmq_spec
from .base import BrokerConfig, CheckResult, Driver
from .nodes import check_nodes
from .spec import ProtocolSpec

SPECS: dict[str, ProtocolSpec] = {spec.name: spec for spec in (
    kafka_spec.SPEC, pulsar_spec.SPEC, mqtt_spec.SPEC, nats_spec.SPEC, rabbitmq_spec.SPEC)}
DRIVERS: dict[str, str] = {protocol: spec.driver for protocol, spec in SPECS.items()}
PROTOCOLS: tuple[str, ...] = tuple(SPECS)


class ProtocolConverter(BaseConverter):
    """`<protocol:name>` in a route matches only a protocol of the registry, so a view never sees an
    unknown one (any other name is the app's ordinary 404)."""

    regex = "|".join(PROTOCOLS)


def driver_class(protocol: str) -> type[Driver]:
    """The Driver class of `protocol` (ImportError when its client library is missing, KeyError when
    there is no such protocol)."""
    return load(DRIVERS[protocol])


def get_driver(protocol: str) -> Driver:
    """A fresh driver for one check or one diagnosis of `protocol`."""
    return driver_class(protocol)()


def driver_classes() -> dict[str, type[Driver]]:
    """Every protocol's Driver class whose client library imports."""
    out: dict[str, type[Driver]] = {}
    for protocol in DRIVERS:
        try:
            out[protocol] = driver_class(protocol)
        except ImportError:
            continue
    return out


def check_all(configs: Mapping[str, BrokerConfig], timeout: float) -> dict[str, CheckResult]:
    """Check every configuration concurrently (one thread each, and one per node of a cluster setting):
    the whole call takes about as long as the slowest check, which never outlives `timeout` by more than
    10 %."""
    if not configs:
        return {}
    drivers: dict[str, Driver | Exception] = {}
    for name, config in configs.items():
        try:
            drivers[name] = get_driver(config.protocol)
        except Exception as exc:  # noqa: BLE001 - a missing client library only affects its own protocol
            drivers[name] = exc
    results: dict[str, CheckResult] = {}
    pool = ThreadPoolExecutor(max_workers=len(configs), thread_name_prefix="broker-check")
    finished = False
    try:
        futures = {name: pool.submit(_check_one, drivers[name], config, timeout)
                   for name, config in configs.items()}
        finished = not wait(list(futures.values()), timeout=timeout * 1.1).not_done
        for name, future in futures.items():
            results[name] = future.result() if future.done() else CheckResult(
                configs[name].protocol, "down", timeout * 1000.0, "unknown",
                "the check did not finish within its timeout")
    finally:
        pool.shutdown(wait=finished, cancel_futures=True)
    return results


def _check_one(driver: Driver | Exception, config: BrokerConfig, timeout: float) -> CheckResult:
    if isinstance(driver, Exception):
        return CheckResult(config.protocol, "down", 0.0, "unknown", f"the {config.protocol} client library "
                           f"is not usable: {type(driver).__name__}: {driver}")
    try:
        return check_nodes(config, timeout, lambda node, seconds: get_driver(node.protocol).check(node, seconds))
    except Exception as exc:  # noqa: BLE001 - a check never raises
        return CheckResult(config.protocol, "down", 0.0, "unknown", f"{type(exc).__name__}: {exc}")
