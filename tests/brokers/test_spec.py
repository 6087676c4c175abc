"""Each protocol's spec (console/brokers/<protocol>_spec.py) is complete and agrees with its driver and
with what the settings model can read: a new protocol that forgets a piece fails here, not on the page."""
from __future__ import annotations

import pytest

from console.brokers import DRIVERS, PROTOCOLS, SPECS, driver_class
from console.brokers.spec import ProtocolSpec
from console.messaging.resolve import Saved, resolve
from console.messaging.schema import FIELDS

KINDS = {"bool", "str", "host", "port", "int", "choice", "hostlist", "serverlist", "url", "secret", "file"}

NODES = {"kafka": ("b1:9092,[::1]:9093", (("b1", 9092), ("::1", 9093))),
         "nats": ("tls://n1:4222,n2:4223", (("n1", 4222), ("n2", 4223))),
         "rabbitmq": ("r1:5672", (("r1", 5672),)),
         "pulsar": ("pulsar+ssl://p1:6651,p2:6651", (("p1", 6651), ("p2", 6651)))}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_spec_is_complete_and_its_driver_names_it(protocol: str) -> None:
    spec = SPECS[protocol]
    assert isinstance(spec, ProtocolSpec) and spec.name == protocol and spec.label
    assert DRIVERS[protocol] == spec.driver == f"console.brokers.{protocol}:{driver_class(protocol).__name__}"
    driver = driver_class(protocol)
    assert driver.spec is spec and driver.protocol == protocol and driver.label == spec.label
    assert (driver.default_port, driver.tls_port) == (spec.default_port, spec.tls_port)
    names = [f.name for f in spec.fields]
    assert len(names) == len(set(names)) and names[:3] == ["enabled", "host", "port"]
    assert {"tls", "tls_ca", "tls_cert", "tls_key", "tls_verify_hostname", "connect_timeout"} <= set(names)
    assert next(f for f in spec.fields if f.name == "port").default == spec.default_port
    assert {f.kind for f in spec.fields} <= KINDS
    assert spec.node_list is None or spec.node_list in names
    assert all(callable(parse) for parse in spec.aliases.values())
    assert all(f.parse is None for f in spec.fields if f.kind not in ("url", "serverlist"))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_node_list_wins_over_host_and_port(protocol: str) -> None:
    spec = SPECS[protocol]
    assert spec.addresses(resolve(protocol, Saved(), {})) == (("localhost", spec.default_port),)
    if spec.node_list is None:
        return
    value, nodes = NODES[protocol]
    env = {FIELDS[protocol][spec.node_list].env_var(protocol): value}
    assert spec.addresses(resolve(protocol, Saved(), env)) == nodes
