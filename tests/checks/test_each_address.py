"""Each address of a host name is a node (issue 18 item 7): a name that resolves to two addresses, one
dead, is `up` with a `node_unreachable` warning naming the dead address, for every protocol; the lookups go
through the checks' resolver seam (an injected resolver: no DNS query leaves the machine), once per name.
Over TLS each address still verifies the name's certificate."""
from __future__ import annotations

from dataclasses import replace

import pytest
from flask import Flask

from console import checks
from console.brokers import get_driver
from console.diagnostics.engine import diagnose
from console.settings import service
from tests.production_faults import lab_config

NAME = "twin.test"
LIVE, DEAD = "127.0.0.1", "127.0.0.2"     # the lab listens on 127.0.0.1 only: 127.0.0.2 refuses
TIMEOUT = 4.0


class Resolver:
    """An injected resolver: `NAME` has a live and a dead address; it counts lookups."""

    def __init__(self, name: str = NAME) -> None:
        self.name, self.calls = name, []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host != self.name:
            raise OSError(f"{host} is not in the test resolver")
        return [LIVE, DEAD]


@pytest.fixture
def ctx(app: Flask):
    with app.app_context():
        yield app


def settings_for(lab: dict, protocol: str) -> dict:
    broker = lab["brokers"][protocol]
    port = broker["plain"]
    if protocol == "pulsar":
        return {"enabled": True, "url": f"pulsar://{NAME}:{port}"}
    if protocol == "kafka":
        return {"enabled": True, "bootstrap_servers": f"{NAME}:{port}"}
    values = {"enabled": True, "host": NAME, "port": str(port)}
    if protocol == "rabbitmq":
        values.update(username=broker["username"], password=broker["password"], vhost=broker["vhost"])
    return values


@pytest.mark.parametrize("protocol", ["mqtt", "nats", "rabbitmq", "kafka", "pulsar"])
def test_each_address_of_a_name_is_a_node(ctx, lab: dict, protocol: str) -> None:
    outcome = service.apply_changes(protocol, settings_for(lab, protocol), "test")
    assert outcome.ok, outcome
    resolver = Resolver()
    result = checks.check_settings(service.effective(protocol, reveal=True), TIMEOUT, resolver)
    port = lab["brokers"][protocol]["plain"]
    assert result.up, result.as_dict()
    nodes = {n["node"]: n for n in result.nodes}
    assert {f"{LIVE}:{port}", f"{DEAD}:{port}"} <= set(nodes), result.nodes
    assert nodes[f"{LIVE}:{port}"]["status"] == "up"
    assert nodes[f"{DEAD}:{port}"]["status"] == "down", nodes
    warned = [w for w in result.warnings if w["code"] == "node_unreachable"]
    assert [w["node"] for w in warned] == [f"{DEAD}:{port}"], result.warnings
    assert warned[0]["cause"] == "connection_refused", warned
    assert resolver.calls == [NAME]


def test_a_name_with_one_address_stays_one_node(ctx, lab: dict) -> None:
    outcome = service.apply_changes("nats", {"enabled": True, "host": "localhost",
                                             "port": str(lab["brokers"]["nats"]["plain"])}, "test")
    assert outcome.ok, outcome
    result = checks.check_settings(service.effective("nats", reveal=True), TIMEOUT,
                                   lambda host, port: [LIVE])
    assert result.up and [n["node"] for n in result.nodes] == [f"localhost:{lab['brokers']['nats']['plain']}"]
    assert result.warnings == []


@pytest.mark.parametrize("protocol", ["mqtt", "nats", "rabbitmq"])
def test_an_address_verifies_the_names_certificate(lab: dict, protocol: str) -> None:
    """The wrong-host listeners serve a certificate for wrong.example only: the address of that name
    verifies it (as the name), and the same address without the name is a host-name mismatch."""
    config = lab_config(lab, protocol, lab["brokers"][protocol]["tls_wronghost"], tls=True,
                        login=protocol == "rabbitmq", name="each-address")
    node = replace(config, server_names={LIVE: "wrong.example"})
    assert get_driver(protocol).check(node, TIMEOUT).up, get_driver(protocol).check(node, TIMEOUT).as_dict()
    assert get_driver(protocol).check(config, TIMEOUT).cause == "tls_hostname_mismatch"


def test_tls_through_a_cpp_library_keeps_the_name(lab: dict) -> None:
    """librdkafka and the Pulsar C++ client verify the address they connect to: with TLS their name is not
    split into addresses (it would fail the host-name check), so their own retries cover the addresses."""
    config = lab_config(lab, "kafka", lab["brokers"]["kafka"]["tls"], tls=True, login=False)
    named = replace(config, host=NAME, servers=((NAME, lab["brokers"]["kafka"]["tls"]),))
    assert checks.each_address(named, TIMEOUT, Resolver()) is named


@pytest.mark.parametrize("protocol", ["mqtt", "nats", "rabbitmq", "kafka", "pulsar"])
def test_the_diagnosis_names_the_dead_address_too(ctx, lab: dict, protocol: str) -> None:
    outcome = service.apply_changes(protocol, settings_for(lab, protocol), "test")
    assert outcome.ok, outcome
    resolver = Resolver()
    with checks.broker_config(service.effective(protocol, reveal=True)) as config:
        d = diagnose(config, TIMEOUT, resolver=resolver)
    port = lab["brokers"][protocol]["plain"]
    assert d.ok, (d.cause, d.summary)
    assert [w["node"] for w in d.warnings if w["code"] == "node_unreachable"] == [f"{DEAD}:{port}"], d.warnings
    assert NAME in d.target
    assert resolver.calls == [NAME]
