"""Per-protocol parts of a diagnosis, one module per protocol, imported lazily so that a missing client
library only affects its own protocol."""
from __future__ import annotations

from importlib import import_module

from ...brokers import PROTOCOLS
from .base import Session

SESSIONS: dict[str, str] = {
    "kafka": "console.diagnostics.protocols.kafka:KafkaSession",
    "pulsar": "console.diagnostics.protocols.pulsar:PulsarSession",
    "mqtt": "console.diagnostics.protocols.mqtt:MqttSession",
    "nats": "console.diagnostics.protocols.nats:NatsSession",
    "rabbitmq": "console.diagnostics.protocols.rabbitmq:RabbitmqSession",
}
assert tuple(SESSIONS) == PROTOCOLS


def session_class(protocol: str) -> type[Session]:
    """The Session class of `protocol` (ImportError when its client library is missing)."""
    module, _, name = SESSIONS[protocol].partition(":")
    return getattr(import_module(module), name)


def session_classes() -> dict[str, type[Session]]:
    """Every protocol's Session class whose library imports."""
    out: dict[str, type[Session]] = {}
    for protocol in SESSIONS:
        try:
            out[protocol] = session_class(protocol)
        except ImportError:
            continue
    return out
