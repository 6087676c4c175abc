"""RabbitMQ in the conformance suite: the lab's RabbitMQ, in its own vhost, guest refused."""
from __future__ import annotations

from typing import Any, Callable

from console.brokers.base import BrokerConfig
from tests.brokers.drivertest import Case, Harness, case, config, listener


class RabbitmqHarness(Harness):
    protocol = "rabbitmq"
    needs_login = frozenset({"plain", "tls", "tls_expired", "tls_wronghost"})
    identity = ("product", "version", "cluster_name", "vhost")
    other_protocol = "nats"

    def connection(self, lab: dict, port: int, tls: bool) -> dict[str, Any]:
        return {"options": {"vhost": lab["brokers"]["rabbitmq"]["vhost"]}}

    def cases(self) -> list[Case]:
        return [
            case("rabbitmq", "missing_vhost", listener("plain", options={"vhost": "no-such-vhost"}), "not_found"),
            case("rabbitmq", "denied_vhost",
                 lambda lab, p: config(lab, p, options={"vhost": lab["brokers"][p]["denied_vhost"]}),
                 "access_denied"),
            case("rabbitmq", "expired_unverified_hostname", listener("tls_expired", tls_verify_hostname=False),
                 "tls_expired"),
        ]

    def agreement_cases(self) -> list[Case]:
        return [
            case("rabbitmq", "guest_login", listener("plain", login=False), "auth_failed"),
            case("rabbitmq", "tls_bad_password", listener("tls", password="wrong-pass"), "auth_failed"),
            case("rabbitmq", "another_protocol_behind_tls",
                 lambda lab, p: config(lab, p, port=lab["brokers"]["mqtt"]["tls"], tls=True), "protocol_mismatch"),
            case("rabbitmq", "missing_exchange", listener("plain", options={"vhost": "labvhost",
                                                                              "exchange": "no-such-exchange"}),
                 "not_found"),
        ]

    def assert_identity(self, lab: dict, check: Callable[[BrokerConfig], Any]) -> None:
        rabbit = check(config(lab, "rabbitmq"))
        assert rabbit.identity["product"] == "RabbitMQ" and rabbit.identity["vhost"] == "labvhost"


HARNESS = RabbitmqHarness()
