"""Protocol drivers, one module per protocol, imported lazily so that a missing client library
only affects its own protocol."""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Checker

PROTOCOLS: tuple[str, ...] = ("kafka", "pulsar", "mqtt", "nats", "rabbitmq")

CHECKERS: dict[str, str] = {
    "kafka": "console.brokers.kafka:KafkaChecker",
    "pulsar": "console.brokers.pulsar:PulsarChecker",
    "mqtt": "console.brokers.mqtt:MqttChecker",
    "nats": "console.brokers.nats:NatsChecker",
    "rabbitmq": "console.brokers.rabbitmq:RabbitmqChecker",
}


def get_checker(protocol: str) -> "Checker":
    """The checker instance for `protocol`."""
    module, _, name = CHECKERS[protocol].partition(":")
    return getattr(import_module(module), name)()
