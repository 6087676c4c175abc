"""The one interface every protocol driver implements: one `Driver` per protocol, used by both the
connection check and the step-wise diagnosis.

A driver's check gets a `BrokerConfig` (the *effective* settings of one protocol, secrets decrypted, TLS
material written to PEM files) and returns a `CheckResult`; it never raises and never outlives its
timeout. For a diagnosis, the generic steps (dns, tcp, tls, the raw handshake: console/diagnostics/)
send the driver's `wire()` greeting and let the driver judge the answer, then the driver logs in
(`auth`) and runs one harmless operation (`operation`) with its client library. A failure is a
`StepFailed`: a cause code, a one-line detail and the concrete values its cause text names; the driver's
own `texts` override the generic cause texts for its protocol.
"""
from __future__ import annotations

import datetime as dt
import time
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Literal, Mapping

from .spec import ProtocolSpec

CAUSES = (
    "ok", "dns_failure", "connection_refused", "connect_timeout", "handshake_timeout",
    "connection_closed", "connection_limit",
    "tls_untrusted", "tls_expired", "tls_not_yet_valid", "tls_hostname_mismatch", "tls_required",
    "tls_not_offered", "tls_client_cert_required", "tls_client_cert_rejected",
    "auth_failed", "sasl_mechanism_unsupported", "access_denied", "not_found",
    "advertised_address_unreachable", "protocol_mismatch", "secret_unavailable", "unknown",
)


@dataclass(frozen=True)
class BrokerConfig:
    """Effective settings of one protocol, ready for a client library."""

    protocol: str
    host: str
    port: int
    servers: tuple[tuple[str, int], ...] = ()      # every address to try (Kafka bootstrap list)
    url: str | None = None                          # Pulsar service URL, when the protocol has one
    tls: bool = False
    tls_ca_file: str | None = None                  # PEM bundle of trusted CAs (None: system store)
    tls_cert_file: str | None = None                # client certificate chain (PEM)
    tls_key_file: str | None = None                 # client private key (PEM, unencrypted)
    tls_verify_hostname: bool = True
    username: str | None = None
    password: str | None = None
    token: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)   # protocol's own fields, by name
    server_names: Mapping[str, str] = field(default_factory=dict)  # address -> the host name it was resolved from

    @property
    def addresses(self) -> tuple[tuple[str, int], ...]:
        """Every (host, port) this configuration connects to."""
        return self.servers or ((self.host, self.port),)

    @property
    def server_name(self) -> str:
        """The name TLS verifies and sends (SNI) for `host`: the configured host name when `host` is one of
        its resolved addresses (each address of a name is checked as a node of its own), else `host`."""
        return self.server_names.get(self.host, self.host)


@dataclass
class CheckResult:
    """Outcome of one connection check."""

    protocol: str
    status: Literal["up", "down"]
    latency_ms: float | None = None
    cause: str = "ok"
    message: str = ""
    identity: dict[str, Any] = field(default_factory=dict)   # cluster id, server version, node name
    checked_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    settings_digest: str | None = None     # set by console.checks: which settings were checked
    nodes: list[dict[str, Any]] = field(default_factory=list)     # one entry per node (console.brokers.nodes)
    warnings: list[dict[str, Any]] = field(default_factory=list)  # node_unreachable, per failed node

    @property
    def up(self) -> bool:
        return self.status == "up"

    def as_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "status": self.status,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 2),
            "cause": self.cause,
            "message": self.message,
            "identity": self.identity,
            "checked_at": self.checked_at.isoformat(),
            "nodes": self.nodes,
            "warnings": self.warnings,
        }


def one_line(text: object, limit: int = 300) -> str:
    """`text` as one trimmed line of at most `limit` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "\u2026"


class CheckFailed(Exception):
    """A decisive failure of a check: a cause code from CAUSES and a one-line message."""

    def __init__(self, cause: str, message: str) -> None:
        if cause not in CAUSES:
            raise ValueError(f"unknown cause {cause!r}")
        super().__init__(cause, message)
        self.cause = cause
        self.message = one_line(message)

    def __str__(self) -> str:
        return f"{self.cause}: {self.message}"


class Deadline:
    """A monotonic-clock budget: when a check started, when it must be over, and laps within it."""

    def __init__(self, timeout: float, *, start: float | None = None,
                 parent: Deadline | None = None) -> None:
        self.start = time.monotonic() if start is None else start
        self.timeout = max(0.0, float(timeout))
        self.end = self.start + self.timeout
        self.finished: float | None = None
        self._parent = parent

    def remaining(self, cap: float | None = None) -> float:
        """Seconds left (never negative), at most `cap` when given."""
        left = max(0.0, self.end - time.monotonic())
        return left if cap is None else min(left, cap)

    @property
    def expired(self) -> bool:
        """True once the budget is spent."""
        return time.monotonic() >= self.end

    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.monotonic() - self.start

    def share(self, fraction: float) -> Deadline:
        """A deadline with the same start that ends after `fraction` of this one's budget."""
        return Deadline(self.timeout * fraction, start=self.start, parent=self)

    def done(self, at: float | None = None) -> None:
        """Mark the round trip as complete: latency is measured up to here, not to the clean-up."""
        if self.finished is None:
            self.finished = time.monotonic() if at is None else at
        if self._parent is not None:
            self._parent.done(self.finished)

    def latency_ms(self) -> float:
        """Milliseconds from the start to `done()` (or to now)."""
        return ((self.finished or time.monotonic()) - self.start) * 1000.0



class StepFailed(CheckFailed):
    """A failure named by a driver: a cause code, a one-line detail, and the concrete values its cause
    text names. `unsure` says the client library could not tell the cause apart from a transport fault:
    a check then probes the transport first (`net.diagnose`), while a diagnosis, whose earlier steps
    already proved the transport, takes the cause as it is."""

    def __init__(self, cause: str, message: str, *, unsure: bool = False, **facts: Any) -> None:
        super().__init__(cause, message)
        self.unsure = unsure
        self.facts = facts


@dataclass(frozen=True)
class Greeting:
    """The first bytes a protocol's client sends, and how to recognise its own broker's answer."""

    protocol: str
    payload: bytes
    expect: Callable[[bytes], bool]


@dataclass(frozen=True)
class Wire:
    """A protocol's first exchange: the greeting, when its answer is complete, and whether the broker
    speaks first (NATS sends INFO on connect, in plaintext even before a TLS upgrade). A broker that speaks
    first may refuse right after its first words (NATS: `-ERR 'maximum connections exceeded'`), and over
    TLS 1.3 refuses a client certificate only after the handshake: `listen_after_preamble` waits a moment
    for either without sending a byte (a probe that logged in anonymously would leave an authorization
    error in the broker's log)."""

    greeting: Greeting
    complete: Callable[[bytes], bool]
    server_first: bool = False
    starttls: bool = False
    listen_after_preamble: bool = False   # after the broker's first words (and after TLS), listen a moment


@dataclass
class Passed:
    """A diagnosis step that passed (or does not apply), with its detail."""

    detail: str
    status: str = "ok"
    data: dict[str, Any] = field(default_factory=dict)


class Link(typing.Protocol):
    """The diagnosis's transport to the broker's first address, as the earlier steps checked it."""

    def ask(self, payload: bytes, timeout: float, complete: Callable[[bytes], bool]) -> bytes | None:
        """Send `payload` on a fresh connection (TLS when configured) and return the answer: None when the
        broker stayed silent, b"" when it closed the connection."""


def frame_complete(header: int) -> Callable[[bytes], bool]:
    """A `complete` test for frames that start with a big-endian length of `header` bytes."""
    def complete(data: bytes) -> bool:
        return len(data) >= header and len(data) >= header + int.from_bytes(data[:header], "big")
    return complete


TARGET_CAUSES = ("access_denied", "not_found")   # the operation step's causes that make a check down
TARGET_MIN_TIME = 0.05                           # seconds a check needs left to run the operation step


class _NoLink:
    """The check's stand-in for the diagnosis's raw transport: a check runs the operation step only for
    drivers whose login goes through the client library (Pulsar's raw CONNECT does not: its probe is
    already the operation on the configured topic, so it does not run the step)."""

    def ask(self, payload: bytes, timeout: float, complete: Callable[[bytes], bool]) -> bytes | None:
        raise StepFailed("unknown", "a check has no raw link to the broker")


NO_LINK: Link = _NoLink()


class Driver(ABC):
    """One protocol's driver: the one place that knows its client library, for the check and for the
    diagnosis. An instance serves one check or one diagnosis (`begin` … `close`). Its name, label and
    ports come from its `spec`."""

    spec: ClassVar[ProtocolSpec]                       # the protocol's declarations (<protocol>_spec.py)
    protocol: ClassVar[str]
    label: ClassVar[str]
    default_port: ClassVar[int]
    tls_port: ClassVar[int | None] = None              # the usual TLS port, when the protocol has its own
    address_field: ClassVar[str] = "host"              # the setting a fix for a wrong address names
    tls_on: ClassVar[str] = "tls = true"               # how a fix says "turn TLS on" for this protocol
    tls_off: ClassVar[str] = "turn TLS off"
    texts: ClassVar[Mapping[str, tuple[str, str]]] = {}  # cause texts of this protocol: "cause[/variant]"
    library_share: ClassVar[float] = 0.8               # of a check's budget, for the client library
    tls_by_address: ClassVar[bool] = True              # TLS to an address can verify the name (Python ssl)

    config: BrokerConfig

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        spec = cls.__dict__.get("spec")
        if spec is not None:
            cls.protocol, cls.label = spec.name, spec.label
            cls.default_port, cls.tls_port = spec.default_port, spec.tls_port

    def __init__(self) -> None:
        self.facts: dict[str, Any] = {}

    # -- the check -------------------------------------------------------------------------------------

    def check(self, config: BrokerConfig, timeout: float) -> CheckResult:
        """Connect with `config`, do the minimal round trip, close; never raise: a `CheckFailed` becomes
        its cause, anything else `unknown`."""
        deadline = Deadline(timeout)
        try:
            identity = self.probe(config, deadline)
            self.check_target(config, deadline)
        except CheckFailed as failed:
            failed.__traceback__ = None
            return CheckResult(self.protocol, "down", deadline.latency_ms(), failed.cause, failed.message)
        except Exception as exc:  # noqa: BLE001 - a check never raises
            exc.__traceback__ = None
            return CheckResult(self.protocol, "down", deadline.latency_ms(), "unknown",
                               one_line(f"{type(exc).__name__}: {exc}"))
        return CheckResult(self.protocol, "up", deadline.latency_ms(), "ok", "", identity)

    def check_target(self, config: BrokerConfig, deadline: Deadline) -> None:
        """After a healthy round trip, the diagnosis's operation step (the configured target: publish,
        subscribe, describe) on a fresh login within what is left of `deadline`, so that a check and a
        diagnosis agree: raise its `StepFailed` when the broker refuses the target (TARGET_CAUSES); any
        other failure of that step (time ran out) is not the check's verdict. A driver whose probe already
        uses the configured target, or that has none configured, overrides `uses_target`."""
        if not self.uses_target(config) or deadline.remaining() < TARGET_MIN_TIME:
            return
        try:
            self.begin(config)
            self.auth(deadline, NO_LINK)
            self.operation(deadline, NO_LINK)
        except StepFailed as failed:
            if failed.cause in TARGET_CAUSES:
                raise StepFailed(failed.cause, failed.message, **failed.facts) from None
        except Exception:  # noqa: BLE001 - the round trip passed; only a refused target counts
            pass
        finally:
            self.close()

    def uses_target(self, config: BrokerConfig) -> bool:
        """Whether the check runs the operation step for `config` (see `check_target`)."""
        return True

    @abstractmethod
    def probe(self, config: BrokerConfig, deadline: Deadline) -> dict[str, Any]:
        """Connect, do the minimal round trip and close within `deadline`; return the broker's identity
        or raise `CheckFailed`."""

    # -- the diagnosis ---------------------------------------------------------------------------------

    def begin(self, config: BrokerConfig) -> Driver:
        """Start a diagnosis of `config` (as the client library will really use it); this driver."""
        self.config = self.effective(config)
        self.facts = {}
        return self

    @staticmethod
    def effective(config: BrokerConfig) -> BrokerConfig:
        """`config` with `tls`, host and port as the client library will really use them."""
        return config

    @classmethod
    @abstractmethod
    def wire(cls) -> Wire:
        """The protocol's raw greeting."""

    def check_preamble(self, preamble: bytes) -> None:
        """Check what the broker said before a TLS upgrade (NATS INFO); raise StepFailed when it offers
        no TLS."""

    @abstractmethod
    def describe_handshake(self, reply: bytes) -> str:
        """The handshake step's detail for the broker's own answer (may raise StepFailed)."""

    @abstractmethod
    def auth(self, deadline: Deadline, link: Link) -> Passed:
        """Log in with the configured credentials (or none) using the client library."""

    @abstractmethod
    def operation(self, deadline: Deadline, link: Link) -> Passed:
        """One real, harmless operation on the logged-in connection."""

    @abstractmethod
    def identity(self) -> str:
        """What a healthy diagnosis names in its summary (cluster, server version, ...)."""

    def close(self) -> None:
        """Release what the diagnosis opened with the library; never raises."""

    def login_words(self) -> str:
        """How the diagnosis logs in, for details: user, token or anonymous."""
        if self.config.token:
            return "token"
        if self.config.username:
            return f"user {self.config.username}"
        return "anonymous"
