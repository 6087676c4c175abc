"""The production faults of the lab (scripts/brokerlab.py), as one (protocol × fault) matrix shared by the
diagnosis matrix (tests/diagnostics/test_diagnostics_matrix.py: cause, failing step, fix, and that the check agrees)
and the check's conformance suite (tests/brokers/test_conformance.py: deadline, nothing leaked).

Every fault is listed for every protocol; where the lab cannot show it for a protocol the cell is skipped
with the reason, so the matrix also documents what is not covered and why.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from cryptography import x509

from console.brokers import PROTOCOLS
from console.brokers.base import BrokerConfig

HOST = "127.0.0.1"
TIMEOUT = 3.0
Build = Callable[[dict], BrokerConfig]
Value = Any   # a str, or a function (lab, protocol) -> str, that the fix (or detail) must contain


def lab_config(lab: dict, protocol: str, port: int, *, tls: bool, login: bool, ca: str | None = "ca",
               client: str | None = None, options: dict[str, Any] | None = None,
               name: str = "production-faults") -> BrokerConfig:
    """A BrokerConfig for one port of the lab: TLS with the lab's CA `ca` when `tls`, the lab's user when
    `login`, the client certificate `client` ("client" or "other_client") when given; `name` is the client
    id and topic of the clients that name themselves."""
    broker = lab["brokers"][protocol]
    opts: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if protocol == "kafka":
        extra["servers"] = ((HOST, port),)
        opts = {"security_protocol": "SSL" if tls else "PLAINTEXT", "client_id": name}
    elif protocol == "pulsar":
        extra["url"] = f"pulsar{'+ssl' if tls else ''}://{HOST}:{port}"
        opts = {"topic": f"persistent://public/default/{name}"}
    elif protocol == "mqtt":
        opts = {"protocol_version": "3.1.1", "client_id": name, "qos": "1"}
    elif protocol == "rabbitmq":
        opts = {"vhost": broker["vhost"]}
    opts.update(options or {})
    certs = lab["certs"]
    return BrokerConfig(protocol=protocol, host=HOST, port=port, tls=tls,
                        tls_ca_file=certs[ca] if tls and ca else None,
                        tls_cert_file=certs[f"{client}_crt"] if client else None,
                        tls_key_file=certs[f"{client}_key"] if client else None,
                        username=broker.get("username") if login else None,
                        password=broker.get("password") if login else None, options=opts, **extra)


def config(lab: dict, protocol: str, listener: str | None = "plain", *, port: int | None = None, tls: bool = False,
           login: bool = False, ca: str | None = "ca", client: str | None = None,
           options: dict[str, Any] | None = None, **changes: Any) -> BrokerConfig:
    """A BrokerConfig for one lab listener (or a raw port), RabbitMQ always with the lab's user."""
    base = lab_config(lab, protocol, port or lab["brokers"][protocol][listener], tls=tls,
                      login=login or protocol == "rabbitmq", ca=ca, client=client, options=options)
    return replace(base, **changes)


@dataclass(frozen=True)
class Fault:
    """One cell: a protocol, a fault, the configuration that meets it, the cause and failing step the
    diagnosis must give (the check must give the same cause),
    what the fix must name, and the skip reason where the lab cannot show it."""

    protocol: str
    name: str
    build: Build | None
    cause: str
    step: str | None
    fix: tuple[Value, ...] = ()
    detail: tuple[Value, ...] = ()
    skip: str | None = None
    timeout: float = TIMEOUT
    check: str | None = None   # the check's cause, where it meets more than the step says (default: see above)

    @property
    def check_cause(self) -> str:
        """What the check must answer: `check`, else the diagnosis's cause — the check runs the operation
        step too, so a refused target (access_denied, not_found) makes it down with the same cause
        (issue 18 item 6)."""
        return self.check or self.cause

    @property
    def id(self) -> str:
        return f"{self.protocol}-{self.name}"


def where(kind: str) -> Value:
    """host:port of the protocol's lab listener `kind`."""
    return lambda lab, p: f"{HOST}:{lab['brokers'][p][kind]}"


def not_before(lab: dict, protocol: str) -> str:
    """The notBefore of the lab's not-yet-valid certificate, as the fix writes it."""
    with open(lab["certs"]["notyet_crt"], "rb") as handle:
        cert = x509.load_pem_x509_certificate(handle.read())
    return cert.not_valid_before_utc.strftime("%Y-%m-%d %H:%M:%S UTC")


CLOSED = lambda lab, p: f"{HOST}:{lab['faults']['closed']}"  # noqa: E731
LOGIN = {"nats": False, "mqtt": False, "kafka": False, "pulsar": False, "rabbitmq": True}
NO_LIMIT = {
    "kafka": "Tansu has no connection limit to reach",
    "pulsar": "pulsar-lite has no connection limit to reach",
    "mqtt": "Mosquitto's max_connections closes a surplus connection right after accept without a byte: "
            "that is the accept-and-close fault (connection_closed), which the lab shows",
}
NO_ACL = {
    "kafka": "Tansu has no ACLs (and no working SASL login): no user can be refused an operation",
    "pulsar": "pulsar-lite accepts every credential and authorises every operation",
}


def _each_protocol(name: str, cause: str, step: str | None, build: Callable[[dict, str], BrokerConfig],
                   fix: tuple[Value, ...] = (), detail: tuple[Value, ...] = ()) -> list[Fault]:
    return [Fault(p, name, lambda lab, p=p: build(lab, p), cause, step, fix, detail) for p in PROTOCOLS]


def faults() -> list[Fault]:
    """The whole matrix."""
    out: list[Fault] = []
    out += _each_protocol(
        "mtls_no_client_cert", "tls_client_cert_required", "handshake",
        lambda lab, p: config(lab, p, "tls_client_cert", tls=True, login=LOGIN[p]),
        fix=("tls_cert", "tls_key", where("tls_client_cert")), detail=("none is configured",))
    out += _each_protocol(
        "mtls_client_cert_rejected", "tls_client_cert_rejected", "handshake",
        lambda lab, p: config(lab, p, "tls_client_cert", tls=True, login=LOGIN[p], client="other_client"),
        fix=("CN=Unrelated Test CA", "tls_cert", where("tls_client_cert")),
        detail=("refused the TLS client certificate",))
    out += _each_protocol(
        "mtls_client_cert_accepted", "ok", None,
        lambda lab, p: config(lab, p, "tls_client_cert", tls=True, login=LOGIN[p], client="client"))
    out += _each_protocol(
        "tls_not_yet_valid", "tls_not_yet_valid", "tls",
        lambda lab, p: config(lab, p, "tls_notyet", tls=True, login=LOGIN[p]),
        fix=(not_before, where("tls_notyet"), "clock"), detail=("not yet valid",))
    out += _each_protocol(
        "accept_and_close", "connection_closed", "handshake",
        lambda lab, p: config(lab, p, port=lab["faults"]["closed"], login=LOGIN[p]),
        fix=(CLOSED, "load balancer"), detail=("closed it at once",))
    out += _each_protocol(
        "accept_and_close_tls", "connection_closed", "tls",
        lambda lab, p: config(lab, p, port=lab["faults"]["closed"], tls=True, login=LOGIN[p]),
        fix=(CLOSED, "load balancer"), detail=("closed it at once",))
    for p in PROTOCOLS:
        if p == "kafka":
            out.append(Fault(p, "advertised_address_unreachable", lambda lab: config(lab, "kafka", "advertised_bad"),
                             "advertised_address_unreachable", "operation",
                             fix=("advertised.listeners", where("advertised_bad"),
                                  lambda lab, _: lab["brokers"]["kafka"]["advertised_bad_address"]),
                             detail=(lambda lab, _: lab["brokers"]["kafka"]["advertised_bad_address"],),
                             check="advertised_address_unreachable"))
            out.append(Fault(p, "advertised_address_unresolvable",
                             lambda lab: config(lab, "kafka", "advertised_unresolvable"),
                             "advertised_address_unreachable", "operation",
                             fix=("advertised.listeners", "cannot be resolved",
                                  lambda lab, _: lab["brokers"]["kafka"]["advertised_unresolvable_address"]),
                             detail=("cannot be resolved",), check="advertised_address_unreachable"))
        else:
            for name in ("advertised_address_unreachable", "advertised_address_unresolvable"):
                out.append(Fault(p, name, None, "advertised_address_unreachable", None,
                                 skip="pulsar-lite's lookup always hands out the address it was asked on"
                                 if p == "pulsar" else f"{p} hands out no broker addresses"))
    out += [
        Fault("nats", "connection_limit", lambda lab: config(lab, "nats", "limited"), "connection_limit",
              "handshake", fix=("max_connections", where("limited")), detail=("maximum connections exceeded",)),
        Fault("rabbitmq", "connection_limit",
              lambda lab: config(lab, "rabbitmq", options={"vhost": lab["brokers"]["rabbitmq"]["limited_vhost"]}),
              "connection_limit", "auth", fix=("rabbitmqctl set_vhost_limits -p limitedvhost", "(0)"),
              detail=("connection limit (0) is reached",)),
        Fault("rabbitmq", "user_connection_limit",
              lambda lab: config(lab, "rabbitmq", username=lab["brokers"]["rabbitmq"]["limited_user"],
                                 password=lab["brokers"]["rabbitmq"]["limited_password"]),
              "connection_limit", "auth", fix=("rabbitmqctl set_user_limits limiteduser", "(0)"),
              detail=("user connection limit (0)",)),
    ]
    out += [Fault(p, "connection_limit", None, "connection_limit", None, skip=reason) for p, reason in NO_LIMIT.items()]
    restricted = lambda lab, p, **kw: config(  # noqa: E731
        lab, p, "restricted" if p != "rabbitmq" else "plain", username=lab["brokers"][p]["restricted_user"],
        password=lab["brokers"][p]["restricted_password"], **kw)
    out += [
        Fault("nats", "access_denied", lambda lab: restricted(lab, "nats"), "access_denied", "operation",
              fix=("restricteduser", "_INBOX.>", "permissions"), detail=("permissions violation",)),
        Fault("mqtt", "access_denied", lambda lab: restricted(lab, "mqtt", options={"protocol_version": "5"}),
              "access_denied", "operation", fix=("messaging-console/diagnostics/#", "acl_file", "restricteduser"),
              detail=("Not authorized",)),
        Fault("mqtt", "access_denied_v311", lambda lab: restricted(lab, "mqtt"), "access_denied", "operation",
              fix=("messaging-console/diagnostics/#", "acl_file", "restricteduser"),
              detail=("received nothing back",)),
        Fault("rabbitmq", "access_denied", lambda lab: restricted(lab, "rabbitmq"), "access_denied", "operation",
              fix=("rabbitmqctl set_permissions -p labvhost restricteduser", "amq.default"),
              detail=("ACCESS_REFUSED", "amq.default")),
        Fault("rabbitmq", "access_denied_exchange",
              lambda lab: restricted(lab, "rabbitmq", options={"vhost": "labvhost", "exchange": "amq.topic"}),
              "access_denied", "operation", fix=("amq.topic", "restricteduser", "labvhost"),
              detail=("ACCESS_REFUSED", "amq.topic")),
        Fault("rabbitmq", "write_permission_proven",
              lambda lab: config(lab, "rabbitmq", options={"vhost": "labvhost", "exchange": "amq.topic"}), "ok", None),
    ]
    out += [Fault(p, "access_denied", None, "access_denied", None, skip=reason) for p, reason in NO_ACL.items()]
    return out


FAULTS = faults()
