"""The messaging settings schema: every field of every protocol, as each driver's spec declares it
(console/brokers/<protocol>_spec.py), gathered here with what spans the protocols.

The page's forms, the JSON API, the OpenAPI document, environment overrides, validation, masking and
(later) the audit log all learn from these declarations which fields exist, their types, defaults,
whether they are secret, and whether a change is installation-time or runtime.
"""
from __future__ import annotations

from ..brokers import PROTOCOLS, SPECS
from ..brokers.spec import INSTALL_REASONS, RUNTIME_REASONS, Field

__all__ = ["INSTALL_REASONS", "RUNTIME_REASONS", "Field"]

PROTOCOL_LABELS = {protocol: spec.label for protocol, spec in SPECS.items()}
DEFAULT_PORTS = {protocol: spec.default_port for protocol, spec in SPECS.items()}
# each driver declares its fields (console/brokers/<protocol>_spec.py)
SCHEMA: dict[str, tuple[Field, ...]] = {protocol: spec.fields for protocol, spec in SPECS.items()}

FIELDS: dict[str, dict[str, Field]] = {p: {f.name: f for f in fs} for p, fs in SCHEMA.items()}
FILE_SLOTS = ("tls_ca", "tls_cert")
GROUP_LABELS = {"connection": "Connection", "security": "Security", "options": "Options"}
PRIORITY_REASON = ("Installation-time: the platform picks each new adapter's protocol from this "
                   "order; existing adapters keep theirs.")
PRIORITY_ENV = "SP_PRIORITIZED_PROTOCOL"
# Apache StreamPipes orders kafka, mqtt, (jms), nats, pulsar by default; the console follows it, so a
# service that speaks Pulsar and MQTT gets the protocol it would get in StreamPipes.
DEFAULT_PRIORITIES: tuple[str, ...] = ("kafka", "mqtt", "nats", "pulsar", "rabbitmq")
assert sorted(DEFAULT_PRIORITIES) == sorted(PROTOCOLS)
# KAFKA_BROKERS, NATS_SERVER_URL, RABBIT_SERVER_URL -> their protocol, as the specs declare them
ALIASES = {var: protocol for protocol, spec in SPECS.items() for var in spec.aliases}


def field_for(protocol: str, name: str) -> Field | None:
    """The field `name` of `protocol`, or None."""
    return FIELDS.get(protocol, {}).get(name)
