"""Kafka driver (confluent-kafka `AdminClient`, librdkafka).

Check: bootstrap, one metadata request, a TCP connection to the brokers the metadata advertises, destroy.
Diagnosis: the handshake is a raw ApiVersions request; the login and the operation use the AdminClient
(cluster metadata; then the operation reaches an advertised broker and describes the configured topic:
`describe_topics`, because a metadata request for a missing topic may create it on brokers with
auto-creation on). One classifier (`KafkaDriver.classify`) maps librdkafka's errors to causes for both.

Connection string: `config.servers` as the bootstrap list (`host1:9092,host2:9092`), else `host:port`.

Options honoured: `options["security_protocol"]` (the effective one: PLAINTEXT, SSL, SASL_PLAINTEXT,
SASL_SSL; derived from `tls` and `sasl_mechanism` when empty), `options["sasl_mechanism"]` (PLAIN,
SCRAM-SHA-256, SCRAM-SHA-512) with `username`/`password`, `tls_ca_file` (else librdkafka's `probe` of the
system store), `tls_cert_file`/`tls_key_file`, `tls_verify_hostname`
(`ssl.endpoint.identification.algorithm`), `options["client_id"]`.

Identity: `cluster_id`, `controller_id`, `controller` (host:port), `brokers` (count), `advertised` (the
host:port of every broker in the metadata: console.brokers.nodes checks each one as a node).

Traps handled:
- librdkafka never raises the cause: `list_topics` always fails with "Broker transport failure" and the
  cause reaches `error_cb` only on `poll()`; a refused port is retried until the timeout. The check loops
  `list_topics(timeout=0.05)` + `poll(0)` and stops at the first decisive `error_cb` (authentication, SSL,
  name resolution, all brokers down);
- a fresh client's metadata request lost its bootstrap connection in about one run in four and waited
  ~50 ms: librdkafka (>= 2.10) decommissions the bootstrap broker as soon as its own "connected" metadata
  names the real broker (here the same address), the application's request still in flight on it fails,
  and with sparse connections the new broker is only dialled after `reconnect.backoff.ms / 2` (the
  sparse-connect interval). `enable.sparse.connections=false` dials every learned broker at once, so the
  retried request costs one more connection (~1 ms) instead of 50 ms (bench/README.md has the evidence);
- `socket.connection.setup.timeout.ms` (default 30 s), `socket.timeout.ms` and
  `api.version.request.timeout.ms` are set from the deadline;
- CA, expiry and host-name failures all read "certificate verify failed": a Python handshake with the
  same settings names the exact cause (`net.tls_failure`);
- an SSL client against a plaintext broker hangs in the handshake: an ApiVersions request in plaintext
  then tells `tls_not_offered`; a plaintext client against a TLS port or another protocol is told by
  `net.diagnose`;
- librdkafka never raises the cause of a failed login either: the diagnosis's login loops short
  `list_topics` calls and polls until a decisive error arrives, like the check;
- the most common Kafka connection problem: the bootstrap server answers metadata, but the brokers it
  advertises (`advertised.listeners`) cannot be resolved or reached from here; `list_topics` still
  succeeds over the bootstrap connection and only what needs a broker (produce, consume, describe)
  times out. The check and the diagnosis therefore connect to every advertised broker
  (`advertised_failure`) and name the address (`advertised_address_unreachable`) when none answers;
- and the same fault seen from inside librdkafka: once the first metadata names the advertised broker,
  librdkafka drops the bootstrap connection for it, so a `list_topics` call that missed the first answer
  (a loaded machine: one in a few runs) meets "host:port/<id>: Failed to resolve" or "Connection
  refused" and "1/1 brokers are down" until it re-bootstraps 0.1-0.5 s later. Errors about such a learned
  broker are never taken for the bootstrap's (`decisive`); the loop asks again, and if no metadata comes
  back in time the errors themselves name the advertised address (`learned_failure`).
"""
from __future__ import annotations

import re
import struct
from dataclasses import replace
from typing import Any, Callable, Iterable

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient

from .base import (
    BrokerConfig,
    CheckFailed,
    Deadline,
    Driver,
    Greeting,
    Link,
    Passed,
    StepFailed,
    Wire,
    frame_complete,
    one_line,
)
from .kafka_spec import SPEC
from .net import diagnose, probe_tcp, tls_failure
from .nodes import node_name

_CORRELATION = 0x6D63C0DE
API_VERSIONS = struct.pack(">ihhih", 10, 18, 0, _CORRELATION, -1)
KAFKA_GREETING = Greeting("Kafka", API_VERSIONS,
                          lambda reply: len(reply) >= 8 and reply[4:8] == struct.pack(">i", _CORRELATION))
_STEP = 0.05
_PATIENCE = 0.5
_OFFERED = re.compile(r"supported mechanisms: ([A-Z0-9, _-]+|\(n/a\))", re.I)


def security_protocol(config: BrokerConfig) -> str:
    """The effective `security.protocol`: the option when set, else derived from TLS and SASL."""
    chosen = str(config.options.get("security_protocol") or "").upper()
    if chosen:
        return chosen
    sasl = bool(config.options.get("sasl_mechanism"))
    return {(False, False): "PLAINTEXT", (True, False): "SSL", (False, True): "SASL_PLAINTEXT",
            (True, True): "SASL_SSL"}[(config.tls, sasl)]


def sasl_mechanism(config: BrokerConfig) -> str | None:
    """The configured SASL mechanism; None without SASL."""
    if not security_protocol(config).startswith("SASL"):
        return None
    return str(config.options.get("sasl_mechanism") or "PLAIN").upper()


def bootstrap(config: BrokerConfig) -> str:
    """The `bootstrap.servers` string for `config`."""
    return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in config.addresses)


def client_conf(config: BrokerConfig, budget: float,
                error_cb: Callable[[KafkaError], None]) -> dict[str, Any]:
    """The librdkafka configuration for `config`, every timeout below `budget` seconds."""
    ms = max(int(budget * 1000), 1)
    protocol = security_protocol(config)
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap(config),
        "client.id": str(config.options.get("client_id") or "messaging-console"),
        "security.protocol": protocol,
        "error_cb": error_cb,
        "log_level": 0,
        "socket.connection.setup.timeout.ms": max(ms, 1000),
        "socket.timeout.ms": max(ms, 10),
        "api.version.request.timeout.ms": ms,
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 1000,
        "enable.sparse.connections": False,
    }
    if protocol in ("SSL", "SASL_SSL"):
        conf["ssl.ca.location"] = config.tls_ca_file or "probe"
        conf["ssl.endpoint.identification.algorithm"] = "https" if config.tls_verify_hostname else "none"
        if config.tls_cert_file:
            conf["ssl.certificate.location"] = config.tls_cert_file
            conf["ssl.key.location"] = config.tls_key_file or config.tls_cert_file
    mechanism = sasl_mechanism(config)
    if mechanism:
        conf["sasl.mechanism"] = mechanism
        conf["sasl.username"] = config.username or ""
        conf["sasl.password"] = config.password or ""
    return conf


_LEARNED = re.compile(r"^(?:[a-z_]+://)?(?P<address>\S+)/(?P<id>\d+): ")     # "ssl://" over TLS
_PROBLEMS = {"dns_failure": "cannot be resolved", "connection_refused": "refuses connections",
             "connect_timeout": "does not answer TCP connections", "tls_failed": "fails the TLS handshake"}


def learned(error: KafkaError) -> str | None:
    """The host:port of the advertised broker `error` is about ("host:port/<node id>: ...", over TLS
    "ssl://host:port/<node id>: ..."), or None for an error about a bootstrap server ("host:port/bootstrap:
    ...") or the whole client."""
    found = _LEARNED.match(error.str() or "")
    return found.group("address") if found else None


def decisive(errors: list[KafkaError]) -> KafkaError | None:
    """The error among those librdkafka reported that names the cause, or None while none does.

    Errors about a broker the cluster advertised are never decisive for the bootstrap: librdkafka learned
    that broker from the cluster's metadata, so the bootstrap answered; it decommissions the bootstrap
    connection for the learned broker and, when that broker cannot be reached, re-bootstraps and reports
    "all brokers are down" meanwhile. The caller keeps asking for metadata, and names the advertised
    address (`learned_failure`) if none arrives."""
    if any(learned(error) for error in errors):
        errors = [error for error in errors if error.code() == KafkaError._AUTHENTICATION
                  or (learned(error) is None and error.code() != KafkaError._ALL_BROKERS_DOWN)]
    for code in (KafkaError._AUTHENTICATION, KafkaError._SSL, KafkaError._RESOLVE, KafkaError._BAD_MSG):
        for error in errors:
            if error.code() == code:
                return error
    down = [error for error in errors if error.code() == KafkaError._ALL_BROKERS_DOWN]
    if down:
        transport = [error for error in errors if error.code() == KafkaError._TRANSPORT]
        return transport[-1] if transport else down[0]
    return None


def fetch_metadata(admin: AdminClient, errors: list[KafkaError], window: Deadline) -> tuple[Any, KafkaError | None]:
    """Cluster metadata within `window`, asked in short calls with librdkafka's errors polled in between:
    (metadata, None), or (None, the decisive error), or (None, None) at the end of the window, or once
    librdkafka, having learned an advertised broker it cannot reach, has not re-bootstrapped within a
    third of the time that was left (at least `_PATIENCE` s; in about one run in fifty on a loaded machine
    it does not within 3 s), so that the caller names the advertised address with time to spare."""
    patience: Deadline | None = None
    while not window.expired:
        try:
            return admin.list_topics(timeout=max(window.remaining(_STEP), 0.01)), None
        except KafkaException:
            admin.poll(0)
            found = decisive(errors)
            if found is not None:
                return None, found
            if patience is None and any(learned(error) for error in errors):
                patience = Deadline(window.remaining(max(_PATIENCE, window.remaining() / 3)))
            if patience is not None and patience.expired:
                return None, None
    admin.poll(0)
    return None, decisive(errors)


def _unreachable(problems: list[tuple[str, str]], bootstrap_where: str) -> StepFailed:
    advertised = ", ".join(address for address, _ in problems)
    kinds = sorted({problem for _, problem in problems})
    detail = "; ".join(f"{address} {problem}" for address, problem in problems)
    return StepFailed("advertised_address_unreachable",
                      f"the bootstrap server {bootstrap_where} answers, but the advertised broker "
                      f"address{'es' if len(problems) > 1 else ''} {detail} (advertised.listeners)",
                      advertised=advertised, advertised_problem=" and ".join(kinds))


def learned_failure(errors: list[KafkaError], bootstrap_where: str) -> StepFailed | None:
    """`advertised_address_unreachable` from librdkafka's errors about the brokers it learned from the
    cluster's metadata, when no metadata came back in time; None when there are none."""
    problems: dict[str, str] = {}
    for error in errors:
        address = learned(error)
        if address is None:
            continue
        lowered = error.str().lower()
        cause = ("dns_failure" if error.code() == KafkaError._RESOLVE else
                 "tls_failed" if error.code() == KafkaError._SSL else
                 "connection_refused" if "connection refused" in lowered else
                 "connect_timeout" if "timed out" in lowered else "")
        problems[address] = _PROBLEMS.get(cause, "cannot be reached")
    return _unreachable(sorted(problems.items()), bootstrap_where) if problems else None


def advertised_brokers(metadata: Any) -> list[str]:
    """The host:port of every broker the cluster metadata advertises, by broker id."""
    return [node_name(b.host, b.port) for _, b in sorted(metadata.brokers.items())]


def advertised_failure(metadata: Any, deadline: Deadline, bootstrap_where: str) -> StepFailed | None:
    """`advertised_address_unreachable` when no broker the cluster's metadata advertises can be resolved
    and reached by TCP from here (a working one is enough: the others are a cluster's partial outage);
    None otherwise."""
    brokers = sorted((b.id, b.host, b.port) for b in metadata.brokers.values())
    problems: list[tuple[str, str]] = []
    for _, host, port in brokers:
        try:
            found = probe_tcp(host, port, deadline.remaining(1.0))
        except (UnicodeError, ValueError) as exc:       # a name that is no valid host name at all
            found = CheckFailed("dns_failure", f"{host}: {exc}")
        if found is None:
            return None
        problems.append((f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
                         _PROBLEMS.get(found.cause, "cannot be reached")))
    return _unreachable(problems, bootstrap_where) if problems else None


class KafkaDriver(Driver):
    """Kafka with confluent-kafka: metadata for the check; ApiVersions, SASL login with cluster metadata
    and a topic description for the diagnosis."""

    spec = SPEC
    address_field = "bootstrap_servers (or host)"
    tls_by_address = False   # the C++ library verifies the address it connects to, not a name given apart
    tls_on = "set security_protocol to SSL, or SASL_SSL with a SASL login"
    tls_off = "set security_protocol to PLAINTEXT, or SASL_PLAINTEXT with a SASL login"
    texts = {
        "advertised_address_unreachable": (
            "The Kafka bootstrap server {where} answers, but the broker address the cluster advertises, "
            "{advertised}, {advertised_problem} from this console: metadata works, producing and consuming "
            "do not.",
            "Set advertised.listeners of the broker behind {where} to an address this console can resolve and "
            "reach (for example advertised.listeners=PLAINTEXT://<host reachable from here>:<port>; it "
            "advertises {advertised} now), or make {advertised} resolvable and reachable from here. Brokers in "
            "Docker or Kubernetes need a listener advertised for clients outside."),
        "auth_failed": (
            "The SASL {mechanism} login of {username} failed.{said}",
            "Check the SASL username and password, and that the user has {mechanism} credentials on the "
            "broker (kafka-configs.sh --alter --add-config '{mechanism}=[password=...]' --entity-type users "
            "--entity-name {username})."),
        "auth_failed/sasl_required": (
            "The Kafka listener on {where} closed the connection before answering metadata: it requires a "
            "SASL login, and none is configured.{said}",
            "Set sasl_mechanism, username and password (security_protocol SASL_PLAINTEXT, or SASL_SSL with "
            "TLS) as the listener expects."),
        "access_denied": (
            "The Kafka cluster refused to describe the topic {topic} to {login}.{said}",
            "Grant DESCRIBE on the topic: kafka-acls.sh --add --allow-principal User:{username} --operation "
            "Describe --topic {topic} --bootstrap-server {target}."),
        "not_found": (
            "The topic {topic} does not exist on the cluster.{said}",
            "Create it (kafka-topics.sh --create --topic {topic} --bootstrap-server {target} --partitions "
            "<n> --replication-factor <r>) or correct the topic setting; the diagnosis never creates "
            "topics."),
    }

    def __init__(self) -> None:
        super().__init__()
        self.admin: AdminClient | None = None
        self.errors: list[KafkaError] = []
        self.metadata: Any = None
        self.unreachable: StepFailed | None = None

    # -- the one classifier ----------------------------------------------------------------------------

    def classify(self, config: BrokerConfig, error: KafkaError, errors: Iterable[KafkaError] = ()) -> StepFailed:
        """The cause of a librdkafka error (with the other errors reported alongside it), for the check,
        the login and the operation alike."""
        host, port = config.addresses[0]
        where = f"{host}:{port}"
        words = one_line(error.str())
        lowered = words.lower()
        code = error.code()
        mechanism = sasl_mechanism(config)
        errors = [e for e in errors if learned(e) is None]      # about advertised brokers: see decisive
        if code == KafkaError._AUTHENTICATION:
            offered = _OFFERED.search(words)
            mechanisms = offered.group(1).strip() if offered and offered.group(1) != "(n/a)" else ""
            if "unsupported sasl mechanism" in lowered or "mechanism handshake failed" in lowered:
                listed = (mechanism or "") in mechanisms.replace(",", " ").split()
                return StepFailed("sasl_mechanism_unsupported", words, words=words, offered=mechanisms,
                                  variant="listed" if listed else None)
            return StepFailed("auth_failed", words, words=words)
        if code == KafkaError._RESOLVE or any(e.code() == KafkaError._RESOLVE for e in errors):
            return StepFailed("dns_failure", words, words=words,
                              dns_error=f"librdkafka could not resolve a broker address: {words}")
        if code == KafkaError.UNKNOWN_TOPIC_OR_PART:
            return StepFailed("not_found", words, words=words)
        if code in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED):
            return StepFailed("access_denied", words, words=words)
        if code == KafkaError._SSL and "certificate verify failed" in lowered:
            return StepFailed("tls_untrusted", words, words=words)
        if "connection refused" in lowered:
            return StepFailed("connection_refused", words)
        if "in state connect" in lowered and "timed out" in lowered:
            return StepFailed("connect_timeout", words)
        if code == KafkaError._BAD_MSG:
            return StepFailed("protocol_mismatch", f"{where} does not speak Kafka ({words})", unsure=True)
        if code == KafkaError._TIMED_OUT or "timed out" in lowered:
            return StepFailed("handshake_timeout", words, words=words, unsure=True)
        if mechanism is None and code in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            return StepFailed("auth_failed", f"{where} answers Kafka requests but closed the connection before "
                                             f"sending metadata: it probably requires SASL authentication "
                                             f"({words})", words=words, variant="sasl_required", unsure=True)
        return StepFailed("unknown", words or f"{where}: all brokers are down", words=words, unsure=True)

    # -- the check -------------------------------------------------------------------------------------

    def probe(self, config: BrokerConfig, deadline: Deadline) -> dict[str, Any]:
        """Fetch cluster metadata within `deadline`; the cluster's identity."""
        library = deadline.share(self.library_share)
        errors: list[KafkaError] = []
        admin = AdminClient(client_conf(config, library.remaining(), errors.append))
        try:
            metadata, found = fetch_metadata(admin, errors, library)
            if metadata is not None:
                deadline.done()
                unreachable = advertised_failure(metadata, deadline, bootstrap(config))
                if unreachable is not None:
                    raise unreachable
                controller = metadata.brokers.get(metadata.controller_id)
                return {"cluster_id": metadata.cluster_id, "controller_id": metadata.controller_id,
                        "controller": f"{controller.host}:{controller.port}" if controller else None,
                        "brokers": len(metadata.brokers), "advertised": advertised_brokers(metadata),
                        "tls": "SSL" in security_protocol(config)}
        finally:
            del admin  # librdkafka's client is released here, not when the frame ends
        failed = None if found else learned_failure(errors, bootstrap(config))
        raise failed or self._confirmed(config, deadline, found, errors)

    def uses_target(self, config: BrokerConfig) -> bool:
        """The operation step describes the configured topic; without one it only repeats the probe."""
        return bool(str(config.options.get("topic") or "").strip())

    def _confirmed(self, config: BrokerConfig, deadline: Deadline, error: KafkaError | None,
                   errors: list[KafkaError]) -> CheckFailed:
        """The classifier's cause, confirmed by a transport probe where librdkafka's words are unsure."""
        host, port = config.addresses[0]
        probe_config = self.effective(config)
        if error is None:
            failed = StepFailed("handshake_timeout", f"{host}:{port}: no metadata within the timeout", unsure=True)
        else:
            failed = self.classify(config, error, errors)
        if failed.cause == "tls_untrusted":
            return tls_failure(probe_config, host, port, deadline, failed.message)
        if failed.unsure:
            return diagnose(probe_config, host, port, deadline, KAFKA_GREETING, failed)
        return failed

    # -- the diagnosis ---------------------------------------------------------------------------------

    @staticmethod
    def effective(config: BrokerConfig) -> BrokerConfig:
        tls = "SSL" in security_protocol(config)
        return config if config.tls == tls else replace(config, tls=tls)

    @classmethod
    def wire(cls) -> Wire:
        return Wire(KAFKA_GREETING, frame_complete(4))

    def describe_handshake(self, reply: bytes) -> str:
        error, count = struct.unpack(">hi", reply[8:14]) if len(reply) >= 14 else (0, 0)
        versions = f"{count} APIs" if count else "its API versions"
        return f"ApiVersions answered with {versions} (error code {error})"

    def auth(self, deadline: Deadline, link: Link) -> Passed:
        mechanism = sasl_mechanism(self.config)
        self.facts.update(mechanism=mechanism, username=self.config.username, login=self.login_words(),
                          source="librdkafka reported")
        self.admin = AdminClient(client_conf(self.config, deadline.remaining(), self.errors.append))
        self.metadata, found = fetch_metadata(self.admin, self.errors, deadline)
        if found is not None:
            raise self.classify(self.config, found, self.errors)
        if self.metadata is None:
            self.unreachable = learned_failure(self.errors, bootstrap(self.config))
            if self.unreachable is None:
                raise StepFailed("handshake_timeout", "no cluster metadata within the time left"
                                 + (f" ({one_line(self.errors[-1].str())})" if self.errors else ""))
            learnt = self.unreachable.facts["advertised"]
            self.facts.update(advertised=learnt.split(", "))
            return Passed(f"{self._how(mechanism)}; the cluster's metadata advertised {learnt} (librdkafka "
                          f"learned it and dropped the bootstrap connection for it)", data={"brokers": learnt})
        md = self.metadata
        self.facts.update(cluster=md.cluster_id, brokers=len(md.brokers), advertised=advertised_brokers(md))
        advertised = ", ".join(f"{b.host}:{b.port}" for b in md.brokers.values())
        return Passed(f"{self._how(mechanism)}; cluster {md.cluster_id}, "
                      f"{len(md.brokers)} broker(s) advertised at {advertised}",
                      data={"cluster_id": md.cluster_id, "brokers": advertised})

    def _how(self, mechanism: str | None) -> str:
        return (f"SASL {mechanism} login of {self.config.username} accepted" if mechanism
                else f"anonymous ({security_protocol(self.config)}, no SASL login)")

    def operation(self, deadline: Deadline, link: Link) -> Passed:
        assert self.admin is not None
        if self.unreachable is not None:
            raise self.unreachable
        topic = str(self.config.options.get("topic") or "").strip()
        self.facts["topic"] = topic or None
        if self.metadata is not None:
            unreachable = advertised_failure(self.metadata, deadline, bootstrap(self.config))
            if unreachable is not None:
                raise unreachable
        if not topic:
            md = self.admin.list_topics(timeout=max(deadline.remaining(), 0.01))
            return Passed(f"no topic configured: cluster metadata instead (cluster {md.cluster_id}, "
                          f"{len(md.brokers)} broker(s), {len(md.topics)} topic(s))")
        futures = self.admin.describe_topics(TopicCollection([topic]),
                                             request_timeout=max(deadline.remaining(), 0.01))
        try:
            described = futures[topic].result(timeout=max(deadline.remaining(), 0.01))
        except KafkaException as exc:
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if error is None:
                raise StepFailed("unknown", f"topic {topic}: {one_line(exc)}", words=one_line(exc)) from None
            failed = self.classify(self.config, error)
            if failed.cause == "handshake_timeout":
                raise StepFailed("handshake_timeout", f"no answer to the topic description ({failed.message}): "
                                 f"check that the advertised brokers are reachable", **failed.facts) from None
            raise StepFailed(failed.cause, f"topic {topic}: {failed.message}", **failed.facts) from None
        except TimeoutError:
            raise StepFailed("handshake_timeout", f"no description of topic {topic} within the time left") from None
        partitions = len(described.partitions)
        self.facts["partitions"] = partitions
        return Passed(f"topic {topic} exists with {partitions} partition(s) (DescribeTopics)",
                      data={"topic": topic, "partitions": partitions})

    def identity(self) -> str:
        brokers = self.facts.get("brokers", 0)
        return f"cluster {self.facts.get('cluster')}, {brokers} broker{'s' if brokers != 1 else ''}"

    def close(self) -> None:
        self.admin = None
