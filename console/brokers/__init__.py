"""Protocol drivers, one module per protocol, imported lazily so that a missing client library
only affects its own protocol."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, wait
from importlib import import_module
from typing import Mapping

from .base import BrokerConfig, Checker, CheckResult

PROTOCOLS: tuple[str, ...] = ("kafka", "pulsar", "mqtt", "nats", "rabbitmq")

CHECKERS: dict[str, str] = {
    "kafka": "console.brokers.kafka:KafkaChecker",
    "pulsar": "console.brokers.pulsar:PulsarChecker",
    "mqtt": "console.brokers.mqtt:MqttChecker",
    "nats": "console.brokers.nats:NatsChecker",
    "rabbitmq": "console.brokers.rabbitmq:RabbitmqChecker",
}


def get_checker(protocol: str) -> Checker:
    """The checker instance for `protocol`."""
    module, _, name = CHECKERS[protocol].partition(":")
    return getattr(import_module(module), name)()


def check_all(configs: Mapping[str, BrokerConfig], timeout: float) -> dict[str, CheckResult]:
    """Check every configuration concurrently (one thread each): the whole call takes about as long as the
    slowest check, which never outlives `timeout` by more than 10 %."""
    if not configs:
        return {}
    checkers: dict[str, Checker | Exception] = {}
    for name, config in configs.items():
        try:
            checkers[name] = get_checker(config.protocol)
        except Exception as exc:  # noqa: BLE001 - a missing client library only affects its own protocol
            checkers[name] = exc
    results: dict[str, CheckResult] = {}
    pool = ThreadPoolExecutor(max_workers=len(configs), thread_name_prefix="broker-check")
    finished = False
    try:
        futures = {name: pool.submit(_check_one, checkers[name], config, timeout)
                   for name, config in configs.items()}
        finished = not wait(list(futures.values()), timeout=timeout * 1.1).not_done
        for name, future in futures.items():
            results[name] = future.result() if future.done() else CheckResult(
                configs[name].protocol, "down", timeout * 1000.0, "unknown",
                "the check did not finish within its timeout")
    finally:
        pool.shutdown(wait=finished, cancel_futures=True)
    return results


def _check_one(checker: Checker | Exception, config: BrokerConfig, timeout: float) -> CheckResult:
    if isinstance(checker, Exception):
        return CheckResult(config.protocol, "down", 0.0, "unknown", f"the {config.protocol} client library "
                           f"is not usable: {type(checker).__name__}: {checker}")
    try:
        return checker.check(config, timeout)
    except Exception as exc:  # noqa: BLE001 - a check never raises
        return CheckResult(config.protocol, "down", 0.0, "unknown", f"{type(exc).__name__}: {exc}")
