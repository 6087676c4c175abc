"""MQTT as the settings model sees it: fields and rules; one broker, no node list (the driver is mqtt.py)."""
from __future__ import annotations

from .spec import (
    RUNTIME,
    Field,
    Finding,
    Pitfall,
    ProtocolSpec,
    Settings,
    common,
    connect_timeout,
    install,
    login,
    login_pair,
    own,
    tls,
)


class MqttSpec(ProtocolSpec):
    name = "mqtt"
    label = "MQTT"
    default_port = 1883
    tls_port = 8883
    driver = "console.brokers.mqtt:MqttDriver"
    client_name = "client_id"
    unique_client_name = True
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

    def pitfalls(self, s: Settings) -> list[Pitfall]:
        out = []
        qos = int(s.get("qos") or 0)
        if s.get("clean_session") and qos > 0 and own(s, "clean_session", "qos"):
            out.append(Pitfall(self.name, "clean_session", "warning",
                               "Clean session with QoS > 0",
                               "A clean session drops the subscription and its queued QoS 1/2 messages "
                               "whenever the client reconnects, so the delivery guarantee of QoS "
                               f"{qos} is lost across reconnects.",
                               "Turn clean session off (persistent session) with a stable client id."))
        if qos == 0:
            out.append(Pitfall(self.name, "qos", "warning", "QoS 0 (at most once)",
                               "Messages are lost when the connection drops or the broker restarts.",
                               "Use QoS 1 where delivery matters; QoS 0 only for telemetry that may "
                               "be lost."))
        keepalive = int(s.get("keepalive") or 0)
        if not 30 <= keepalive <= 60:
            out.append(Pitfall(self.name, "keepalive", "warning", f"Keepalive {keepalive} s",
                               "Below 30 s adds traffic and false disconnects on slow links; above "
                               "60 s (or 0, off) lets a dead connection go unnoticed for long.",
                               "Set keepalive between 30 and 60 seconds."))
        return out


SPEC = MqttSpec()
