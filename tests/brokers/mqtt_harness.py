"""MQTT in the conformance suite: the lab's Mosquitto, v3.1.1 unless a case asks for v5."""
from __future__ import annotations

from typing import Any, Callable

from console.brokers.base import BrokerConfig
from tests.brokers.drivertest import Case, Harness, case, config, listener

V5 = {"protocol_version": "5"}


def client_cert(lab: dict, p: str) -> BrokerConfig:
    return config(lab, p, "tls_client_cert", tls_cert_file=lab["certs"]["client_crt"],
                  tls_key_file=lab["certs"]["client_key"])


class MqttHarness(Harness):
    protocol = "mqtt"
    needs_login = frozenset({"plain_auth", "tls"})
    identity = ("protocol_version", "session_present")
    other_protocol = "rabbitmq"
    login_listener = "plain_auth"

    def connection(self, lab: dict, port: int, tls: bool) -> dict[str, Any]:
        return {"options": {"protocol_version": "3.1.1", "client_id": "conformance", "keepalive": 30}}

    def cases(self) -> list[Case]:
        return [
            case("mqtt", "v5", listener("plain", options=V5), "up", protocol_version="5"),
            case("mqtt", "v5_tls", listener("tls", options=V5), "up"),
            case("mqtt", "login", listener("plain_auth"), "up"),
            case("mqtt", "no_credentials", listener("plain_auth", login=False), "auth_failed"),
            case("mqtt", "v5_bad_password", listener("plain_auth", password="wrong-pass", options=V5),
                 "auth_failed"),
            case("mqtt", "client_cert", client_cert, "up"),
            case("mqtt", "client_cert_missing", listener("tls_client_cert"), "tls_client_cert_required"),
            case("mqtt", "v5_client_cert_missing", listener("tls_client_cert", options=V5),
                 "tls_client_cert_required"),
        ]

    def agreement_cases(self) -> list[Case]:
        return [
            case("mqtt", "tls_bad_password", listener("tls", password="wrong-pass"), "auth_failed"),
            case("mqtt", "another_protocol_behind_tls",
                 lambda lab, p: config(lab, p, port=lab["brokers"]["rabbitmq"]["tls"], tls=True),
                 "protocol_mismatch"),
        ]

    def assert_identity(self, lab: dict, check: Callable[[BrokerConfig], Any]) -> None:
        mqtt_v5 = check(config(lab, "mqtt", options={"protocol_version": "5"}))
        assert mqtt_v5.identity["protocol_version"] == "5" and mqtt_v5.identity["session_present"] is False


HARNESS = MqttHarness()
