"""Kafka's advertised-broker probe (console.brokers.kafka.advertised_failure) on metadata as librdkafka
returns it, against the lab's fault ports: no Kafka client, loopback only, no name lookups; and how
librdkafka's errors about the brokers it learned from the metadata are read (`learned`, `decisive`,
`learned_failure`, `fetch_metadata`), with errors worded as librdkafka 2.16 words them and against the
lab's broker that advertises an address nothing listens on."""
from __future__ import annotations

from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient, BrokerMetadata, ClusterMetadata

from console.brokers.base import Deadline
from console.brokers.kafka import advertised_failure, decisive, fetch_metadata, learned, learned_failure

UNRESOLVABLE = "kafka-0.example.invalid:9092"
RESOLVE = KafkaError(KafkaError._RESOLVE, f"{UNRESOLVABLE}/111: Failed to resolve '{UNRESOLVABLE}': Name or "
                                          f"service not known (after 0ms in state CONNECT)")
REFUSED = KafkaError(KafkaError._TRANSPORT, "127.0.0.1:17999/111: Connect to ipv4#127.0.0.1:17999 failed: "
                                            "Connection refused (after 0ms in state CONNECT)")
DOWN = KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down")
BOOTSTRAP_REFUSED = KafkaError(KafkaError._TRANSPORT, "127.0.0.1:19000/bootstrap: Connect to ipv4#127.0.0.1:19000 "
                                                      "failed: Connection refused (after 0ms in state CONNECT)")


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


def test_learned_names_an_advertised_broker_never_a_bootstrap_server() -> None:
    assert learned(RESOLVE) == UNRESOLVABLE and learned(REFUSED) == "127.0.0.1:17999"
    assert learned(BOOTSTRAP_REFUSED) is None and learned(DOWN) is None
    over_tls = KafkaError(KafkaError._SSL, "ssl://127.0.0.1:19196/111: SSL handshake failed")
    assert learned(over_tls) == "127.0.0.1:19196"
    assert learned(KafkaError(KafkaError._SSL, "ssl://127.0.0.1:19196/bootstrap: SSL handshake failed")) is None


def test_errors_about_a_learned_broker_are_not_the_bootstraps() -> None:
    """The CI failure of stop 14: a learned broker's "Failed to resolve" was taken for the bootstrap's and
    named dns_failure; "all brokers are down" then only means the learned broker is."""
    assert decisive([RESOLVE, DOWN]) is None and decisive([REFUSED, DOWN, REFUSED, DOWN]) is None
    assert decisive([BOOTSTRAP_REFUSED, DOWN]) is BOOTSTRAP_REFUSED
    login = KafkaError(KafkaError._AUTHENTICATION, "127.0.0.1:17999/111: SASL authentication error")
    assert decisive([REFUSED, login]) is login


def test_learned_failure_names_each_advertised_address() -> None:
    found = learned_failure([RESOLVE, DOWN, REFUSED, DOWN, RESOLVE], "127.0.0.1:19095")
    assert found is not None and found.cause == "advertised_address_unreachable"
    assert found.facts["advertised"] == f"127.0.0.1:17999, {UNRESOLVABLE}"
    assert found.facts["advertised_problem"] == "cannot be resolved and refuses connections"
    assert found.message == (f"the bootstrap server 127.0.0.1:19095 answers, but the advertised broker addresses "
                             f"127.0.0.1:17999 refuses connections; {UNRESOLVABLE} cannot be resolved "
                             f"(advertised.listeners)")
    assert learned_failure([BOOTSTRAP_REFUSED, DOWN], "127.0.0.1:19000") is None


def test_a_client_that_dropped_its_bootstrap_for_a_dead_broker_ends_in_time(lab: dict) -> None:
    """A client of the broker that advertises an address nothing listens on, asked again and again: after
    its first metadata it has only that advertised broker left. Each call either answers (librdkafka
    re-bootstrapped, or won the race) or gives up a third of the way into its window with the advertised
    address named; never with the learned broker's error taken for the bootstrap's, never at the end of
    the window."""
    k = lab["brokers"]["kafka"]
    errors: list[KafkaError] = []
    admin = AdminClient({"bootstrap.servers": f"{k['host']}:{k['advertised_bad']}", "error_cb": errors.append,
                         "log_level": 0, "enable.sparse.connections": False, "reconnect.backoff.ms": 100})
    for _ in range(6):
        window = Deadline(3.0)
        metadata, found = fetch_metadata(admin, errors, window)
        assert found is None, errors
        if metadata is None:
            assert window.elapsed() < 2.9
            failed = learned_failure(errors, "bootstrap")
            assert failed is not None and failed.facts["advertised"] == k["advertised_bad_address"], errors
        else:
            assert [f"{b.host}:{b.port}" for b in metadata.brokers.values()] == [k["advertised_bad_address"]]
