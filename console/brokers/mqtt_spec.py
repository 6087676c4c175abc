"""MQTT as the settings model sees it: fields and rules; one broker, no node list (the driver is mqtt.py)."""
from __future__ import annotations

from .spec import (
    RUNTIME,
    Field,
    Finding,
    ProtocolSpec,
    Settings,
    common,
    connect_timeout,
    install,
    login,
    login_pair,
    tls,
)


class MqttSpec(ProtocolSpec):
    name = "mqtt"
    label = "MQTT"
    default_port = 1883
    tls_port = 8883
    driver = "console.brokers.mqtt:MqttDriver"
    fields = (
        *common(1883),
        *login(),
        *tls(),
        Field("client_id", "Client id", "str", "messaging-console", **install("identity", "options")),
        Field("protocol_version", "Protocol version", "choice", "3.1.1", choices=("3.1.1", "5"),
              **install("address", "options")),
        Field("keepalive", "Keepalive (s)", "int", 60, minimum=0, maximum=65535, **RUNTIME),
        Field("clean_session", "Clean session", "bool", True, **RUNTIME),
        Field("qos", "QoS", "choice", 1, choices=(0, 1, 2), **RUNTIME),
        connect_timeout(),
    )

    def rules(self, s: Settings) -> list[Finding]:
        return login_pair(s, password_required=False)


SPEC = MqttSpec()
