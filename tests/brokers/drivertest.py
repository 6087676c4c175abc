"""The shared vocabulary of the driver conformance suite (tests/brokers/test_conformance.py), in the style
of go-cloud's drivertest: a `Harness` per protocol (tests/brokers/<protocol>_harness.py) says how to reach
its broker in the lab, which listeners need a login, what an up check names, how the lab shows a refused
login and another protocol, and the driver's own cases; the suite runs the same contract over every
harness. A new protocol is its driver (console/brokers/<protocol>.py with its spec) and its harness.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from importlib import import_module
from typing import Any, Callable, ClassVar

from console.brokers import PROTOCOLS
from console.brokers.base import BrokerConfig

HOST = "127.0.0.1"
TIMEOUT = 3.0
SLOW = 2.0
TLS_LISTENERS = {"tls", "tls_expired", "tls_wronghost", "tls_client_cert"}

Build = Callable[[dict, str], BrokerConfig]


@dataclass(frozen=True)
class Case:
    """One case: how to build the configuration, the outcome it must give, and its timeout."""

    protocol: str
    name: str
    build: Build
    expect: frozenset[str]
    timeout: float = TIMEOUT
    skip: str | None = None
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.protocol}-{self.name}"


def case(protocol: str, name: str, build: Build, *expect: str, timeout: float = TIMEOUT,
         skip: str | None = None, **identity: Any) -> Case:
    return Case(protocol, name, build, frozenset(expect), timeout, skip, identity)


class Harness:
    """How the suite reaches one protocol's broker in the lab. Subclasses register themselves."""

    protocol: ClassVar[str]
    needs_login: ClassVar[frozenset[str]] = frozenset()  # listeners that refuse an anonymous client
    identity: ClassVar[tuple[str, ...]]                   # what an up check's identity must name
    other_protocol: ClassVar[str]                         # whose plain port plays "another protocol"
    login_listener: ClassVar[str] = "plain"               # where a wrong password is refused
    no_bad_login: ClassVar[str | None] = None             # why the lab cannot refuse a login, if it cannot
    wrong_protocol_timeout: ClassVar[float] = TIMEOUT

    def connection(self, lab: dict, port: int, tls: bool) -> dict[str, Any]:
        """The BrokerConfig fields beyond host and port: servers, url, the driver's usual options."""
        return {}

    def bad_login(self, lab: dict) -> BrokerConfig:
        """A login the broker refuses."""
        return config(lab, self.protocol, self.login_listener, login=True, password="wrong-pass")

    def cases(self) -> list[Case]:
        """The driver's own cases, beyond the contract (checked by the check and the diagnosis alike)."""
        return []

    def agreement_cases(self) -> list[Case]:
        """Faults beyond the check's contract where the check and the diagnosis must name one cause."""
        return []

    def assert_identity(self, lab: dict, check: Callable[[BrokerConfig], Any]) -> None:
        """The identity an up check reports names this lab's broker (`check` runs one check)."""


def harness(protocol: str) -> Harness:
    """The harness of `protocol` (tests/brokers/<protocol>_harness.py, its `HARNESS`)."""
    found: Harness = import_module(f"tests.brokers.{protocol}_harness").HARNESS
    assert found.protocol == protocol
    return found


def harnesses() -> dict[str, Harness]:
    """One harness per registered protocol, in the registry's order."""
    return {protocol: harness(protocol) for protocol in PROTOCOLS}


def config(lab: dict, protocol: str, listener: str = "plain", *, port: int | None = None,
           tls: bool | None = None, ca: str | None = "ca", login: bool | None = None,
           **changes: Any) -> BrokerConfig:
    """A BrokerConfig for one lab listener (or a raw port), with the driver's usual options."""
    h = harness(protocol)
    broker = lab["brokers"][protocol]
    port = port or broker[listener]
    tls = listener in TLS_LISTENERS if tls is None else tls
    login = listener in h.needs_login if login is None else login
    reach = h.connection(lab, port, tls)
    options: dict[str, Any] = dict(reach.pop("options", {}))
    options.update(changes.pop("options", {}))
    base = BrokerConfig(
        protocol=protocol, host=HOST, port=port, tls=tls,
        tls_ca_file=lab["certs"][ca] if (tls and ca) else None,
        username=broker.get("username") if login else None,
        password=broker.get("password") if login else None, options=options, **reach)
    return replace(base, **changes)


def at_fault(kind: str) -> Build:
    return lambda lab, p: config(lab, p, port=lab["faults"][kind])


def listener(name: str, **kwargs: Any) -> Build:
    return lambda lab, p: config(lab, p, name, **kwargs)


def bad_login(lab: dict, protocol: str) -> BrokerConfig:
    """A login the broker refuses (the harness says how)."""
    return harness(protocol).bad_login(lab)


def other_protocol(lab: dict, protocol: str) -> BrokerConfig:
    """The driver's settings pointed at a port of another protocol."""
    return config(lab, protocol, port=lab["brokers"][harness(protocol).other_protocol]["plain"])


CONTRACT: list[tuple[str, Build, tuple[str, ...], float]] = [
    ("up", listener("plain"), ("up",), TIMEOUT),
    ("refused", at_fault("refused"), ("connection_refused",), TIMEOUT),
    ("silent", at_fault("silent"), ("connect_timeout", "handshake_timeout"), SLOW),
    ("syn_dropped", at_fault("syn_drop"), ("connect_timeout",), SLOW),
    ("tls", listener("tls"), ("up",), TIMEOUT),
    ("tls_wrong_ca", listener("tls", ca="other_ca"), ("tls_untrusted",), TIMEOUT),
    ("tls_system_store", listener("tls", ca=None), ("tls_untrusted",), TIMEOUT),
    ("tls_expired", listener("tls_expired"), ("tls_expired",), TIMEOUT),
    ("tls_wronghost", listener("tls_wronghost"), ("tls_hostname_mismatch",), TIMEOUT),
    ("tls_wronghost_unverified", listener("tls_wronghost", tls_verify_hostname=False), ("up",), TIMEOUT),
    ("tls_to_plain", listener("plain", tls=True), ("tls_not_offered",), SLOW),
    ("plain_to_tls", listener("tls", tls=False), ("tls_required",), TIMEOUT),
    ("bad_password", bad_login, ("auth_failed",), TIMEOUT),
    ("wrong_protocol", other_protocol, ("protocol_mismatch",), TIMEOUT),
]


def contract_cases() -> list[Case]:
    """The cases every driver must pass, with its harness's allowances (a NATS client waits for the
    server's INFO before it can tell another protocol, so its harness gives the wrong-protocol case 1 s)."""
    out = []
    for p, h in harnesses().items():
        for name, build, expect, timeout in CONTRACT:
            out.append(case(p, name, build, *expect,
                            timeout=h.wrong_protocol_timeout if name == "wrong_protocol" else timeout,
                            skip=h.no_bad_login if name == "bad_password" else None))
    return out
