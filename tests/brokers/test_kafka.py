"""Kafka's advertised-broker probe (console.brokers.kafka.advertised_failure) on metadata as librdkafka
returns it, against the lab's fault ports: no Kafka client, loopback only, no name lookups."""
from __future__ import annotations

from confluent_kafka.admin import BrokerMetadata, ClusterMetadata

from console.brokers.base import Deadline
from console.brokers.kafka import advertised_failure


def metadata(*brokers: tuple[str, int]) -> ClusterMetadata:
    md = ClusterMetadata()
    md.brokers = {}
    for number, (host, port) in enumerate(brokers, start=1):
        broker = BrokerMetadata()
        broker.id, broker.host, broker.port = number, host, port
        md.brokers[number] = broker
    return md


def test_every_advertised_broker_unreachable_names_each_address(lab: dict) -> None:
    f = lab["faults"]
    found = advertised_failure(metadata(("127.0.0.1", f["refused"]), ("127.0.0.1", f["syn_drop"])),
                               Deadline(2.0), "127.0.0.1:19094")
    assert found is not None and found.cause == "advertised_address_unreachable"
    assert found.facts["advertised"] == f"127.0.0.1:{f['refused']}, 127.0.0.1:{f['syn_drop']}"
    assert found.facts["advertised_problem"] == "does not answer TCP connections and refuses connections"
    assert "127.0.0.1:19094" in found.message and "advertised.listeners" in found.message


def test_one_reachable_advertised_broker_is_enough(lab: dict) -> None:
    """A cluster with one broker down still works: that is a node warning, not this cause."""
    reachable = ("127.0.0.1", lab["brokers"]["kafka"]["plain"])
    assert advertised_failure(metadata(("127.0.0.1", lab["faults"]["refused"]), reachable), Deadline(2.0),
                              "127.0.0.1:19092") is None
    assert advertised_failure(metadata(), Deadline(2.0), "127.0.0.1:19092") is None
