"""The check and the diagnosis agree on the configured target (issue 18 item 6): a login that may not use
the target — an MQTT ACL (sensors/# only), NATS permissions (sensors.> only), RabbitMQ write permission,
a missing RabbitMQ exchange or Kafka topic — is `down` with the diagnosis's cause (access_denied /
not_found), for the check of a driver, of console.checks (what /readyz and the page read), and within
the check's timeout; the same settings without the restriction stay `up`. Real lab brokers only."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from console.brokers import get_driver
from console.brokers.base import BrokerConfig
from console.diagnostics.engine import diagnose
from tests.production_faults import lab_config

TIMEOUT = 3.0


def restricted(lab: dict, protocol: str, **options: Any) -> BrokerConfig:
    broker = lab["brokers"][protocol]
    port = broker["restricted"] if protocol != "rabbitmq" else broker["plain"]
    config = lab_config(lab, protocol, port, tls=False, login=True, options=options, name="target-check")
    return replace(config, username=broker["restricted_user"], password=broker["restricted_password"])


CASES = {
    "mqtt-acl-v5": (lambda lab: restricted(lab, "mqtt", protocol_version="5"), "access_denied"),
    "mqtt-acl-v311": (lambda lab: restricted(lab, "mqtt"), "access_denied"),
    "nats-permissions": (lambda lab: restricted(lab, "nats"), "access_denied"),
    "rabbitmq-write-default": (lambda lab: restricted(lab, "rabbitmq"), "access_denied"),
    "rabbitmq-write-exchange": (lambda lab: restricted(lab, "rabbitmq", exchange="amq.topic"), "access_denied"),
    "rabbitmq-missing-exchange": (lambda lab: lab_config(lab, "rabbitmq", lab["brokers"]["rabbitmq"]["plain"],
                                                         tls=False, login=True, options={"exchange": "no-such-x"}),
                                  "not_found"),
    "kafka-missing-topic": (lambda lab: lab_config(lab, "kafka", lab["brokers"]["kafka"]["plain"], tls=False,
                                                   login=False, options={"topic": "no-such-topic-target"}),
                            "not_found"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_check_names_what_the_diagnosis_names(lab: dict, name: str) -> None:
    build, cause = CASES[name]
    config = build(lab)
    d = diagnose(config, TIMEOUT)
    assert d.cause == cause, (name, d.cause, [(s.name, s.status, s.detail) for s in d.steps])
    started = time.monotonic()
    result = get_driver(config.protocol).check(config, TIMEOUT)
    elapsed = time.monotonic() - started
    assert (result.status, result.cause) == ("down", cause), (name, result.as_dict())
    assert result.message, name
    assert elapsed <= TIMEOUT * 1.1, f"{name}: the check took {elapsed:.2f} s"


@pytest.mark.parametrize("protocol", ["mqtt", "nats", "rabbitmq", "kafka", "pulsar"])
def test_a_login_that_may_use_its_target_stays_up(lab: dict, protocol: str) -> None:
    """The operation step runs in every check and passes for the lab's own user."""
    port = lab["brokers"][protocol].get("plain_auth") if protocol in ("mqtt", "nats") else None
    options = {"topic": "target-check"} if protocol == "kafka" else {}
    config = lab_config(lab, protocol, port or lab["brokers"][protocol]["plain"], tls=False,
                        login=protocol in ("mqtt", "nats", "rabbitmq"), options=options, name="target-check")
    if protocol == "kafka":
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{lab['brokers']['kafka']['plain']}"})
        admin.create_topics([NewTopic("target-check", 1, 1)])["target-check"].exception(timeout=5)
    result = get_driver(protocol).check(config, TIMEOUT)
    assert result.up, result.as_dict()
