"""NATS in the conformance suite: the lab's nats-server, with a user listener and a token listener."""
from __future__ import annotations

from typing import Any, Callable

from console.brokers.base import BrokerConfig
from tests.brokers.drivertest import Case, Harness, case, config, listener


class NatsHarness(Harness):
    protocol = "nats"
    needs_login = frozenset({"plain_auth", "tls"})
    identity = ("server_name", "server_id", "version")
    other_protocol = "mqtt"
    login_listener = "plain_auth"
    wrong_protocol_timeout = 1.0   # a NATS client waits for INFO before it can tell another protocol

    def connection(self, lab: dict, port: int, tls: bool) -> dict[str, Any]:
        return {"options": {"name": "conformance"}}

    def cases(self) -> list[Case]:
        return [
            case("nats", "login", listener("plain_auth"), "up"),
            case("nats", "no_credentials", listener("plain_auth", login=False), "auth_failed"),
            case("nats", "token", lambda lab, p: config(lab, p, "plain_token", token=lab["brokers"][p]["token"]),
                 "up"),
            case("nats", "bad_token", listener("plain_token", token="wrong-token"), "auth_failed"),
        ]

    def agreement_cases(self) -> list[Case]:
        return [
            case("nats", "tls_no_credentials", listener("tls", login=False), "auth_failed"),
            case("nats", "token_listener_with_password", listener("plain_token", login=True), "auth_failed"),
            case("nats", "another_protocol_behind_tls",
                 lambda lab, p: config(lab, p, port=lab["brokers"]["rabbitmq"]["tls"], tls=True),
                 "protocol_mismatch"),
        ]

    def assert_identity(self, lab: dict, check: Callable[[BrokerConfig], Any]) -> None:
        nats = check(config(lab, "nats", "tls"))
        assert nats.identity["tls"] is True and nats.identity["version"].count(".") == 2


HARNESS = NatsHarness()
