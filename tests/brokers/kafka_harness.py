"""Kafka in the conformance suite: the lab's Tansu, reached through its bootstrap list."""
from __future__ import annotations

from typing import Any, Callable

from console.brokers.base import BrokerConfig
from tests.brokers.drivertest import HOST, Build, Case, Harness, case, config, listener


def kafka_sasl(port_key: str) -> Build:
    return lambda lab, p: config(lab, p, port_key, username="anyone", password="anything", options={
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256"})


class KafkaHarness(Harness):
    protocol = "kafka"
    identity = ("cluster_id", "controller", "brokers")
    other_protocol = "rabbitmq"

    def connection(self, lab: dict, port: int, tls: bool) -> dict[str, Any]:
        return {"servers": ((HOST, port),),
                "options": {"security_protocol": "SSL" if tls else "PLAINTEXT", "client_id": "conformance"}}

    def bad_login(self, lab: dict) -> BrokerConfig:
        """Any SCRAM login: Tansu refuses them all."""
        return kafka_sasl("sasl")(lab, self.protocol)

    def cases(self) -> list[Case]:
        return [
            case("kafka", "sasl_to_plain", kafka_sasl("plain"), "sasl_mechanism_unsupported"),
            case("kafka", "plain_to_sasl", listener("sasl"), "auth_failed"),
            case("kafka", "sasl_success", kafka_sasl("sasl"), "up",
                 skip="Tansu 0.6.0 stores no SCRAM credentials (dynostore no-ops), so every SASL login to the "
                      "lab's own Tansu fails with unknown-user; successful logins are tested through the SASL "
                      "front over Tansu in tests/brokers/test_sasl_front.py"),
        ]

    def agreement_cases(self) -> list[Case]:
        return [
            case("kafka", "tls_expired_unverified_hostname",
                 listener("tls_expired", tls_verify_hostname=False), "tls_expired"),
            case("kafka", "missing_topic", listener("plain", options={"topic": "no-such-topic-conformance"}),
                 "not_found"),
        ]

    def assert_identity(self, lab: dict, check: Callable[[BrokerConfig], Any]) -> None:
        kafka = check(config(lab, "kafka"))
        assert kafka.identity["cluster_id"] == lab["brokers"]["kafka"]["cluster_id"]
        assert kafka.identity["brokers"] >= 1 and kafka.identity["controller"].startswith(HOST)


HARNESS = KafkaHarness()
