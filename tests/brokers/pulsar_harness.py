"""Pulsar in the conformance suite: the lab's pulsar-lite, reached through a service URL."""
from __future__ import annotations

from typing import Any, Callable

from console.brokers.base import BrokerConfig
from tests.brokers.drivertest import HOST, Case, Harness, case, config, listener


class PulsarHarness(Harness):
    protocol = "pulsar"
    identity = ("service_url", "topic", "partitions")
    other_protocol = "mqtt"
    no_bad_login = ("pulsar-lite accepts any credentials (junk tokens and basic auth succeed), so no "
                    "bad-credentials case can fail here; refused tokens are tested through the token front "
                    "over pulsar-lite in tests/brokers/test_token_front.py")

    def connection(self, lab: dict, port: int, tls: bool) -> dict[str, Any]:
        return {"url": f"pulsar{'+ssl' if tls else ''}://{HOST}:{port}",
                "options": {"topic": "persistent://public/default/conformance"}}

    def cases(self) -> list[Case]:
        return [
            case("pulsar", "url_from_host_port", listener("plain", url=None), "up"),
            case("pulsar", "junk_token_accepted", listener("plain", token="junk"), "up"),
        ]

    def assert_identity(self, lab: dict, check: Callable[[BrokerConfig], Any]) -> None:
        pulsar = check(config(lab, "pulsar", "tls"))
        assert pulsar.identity["service_url"] == f"pulsar+ssl://{HOST}:{lab['brokers']['pulsar']['tls']}"


HARNESS = PulsarHarness()
