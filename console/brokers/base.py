"""The small interface every protocol driver implements: one checker per protocol.

A checker gets a `BrokerConfig` (the *effective* settings of one protocol, secrets decrypted, TLS
material written to PEM files) and returns a `CheckResult`. It never raises and never outlives its
timeout.
"""
from __future__ import annotations

import datetime as dt
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Mapping

CAUSES = (
    "ok", "dns_failure", "connection_refused", "connect_timeout", "handshake_timeout",
    "tls_untrusted", "tls_expired", "tls_hostname_mismatch", "tls_required", "tls_not_offered",
    "auth_failed", "sasl_mechanism_unsupported", "access_denied", "not_found",
    "protocol_mismatch", "unknown",
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

    @property
    def addresses(self) -> tuple[tuple[str, int], ...]:
        """Every (host, port) this configuration connects to."""
        return self.servers or ((self.host, self.port),)


@dataclass
class CheckResult:
    """Outcome of one connection check."""

    protocol: str
    status: Literal["up", "down"]
    latency_ms: float | None = None
    cause: str = "ok"
    message: str = ""
    identity: dict[str, Any] = field(default_factory=dict)   # cluster id, server version, node name
    checked_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    settings_digest: str | None = None     # set by console.checks: which settings were checked

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
        }


class Checker(ABC):
    """A connection checker for one protocol, using that protocol's real client library."""

    protocol: ClassVar[str]
    default_port: ClassVar[int]

    @abstractmethod
    def check(self, config: BrokerConfig, timeout: float) -> CheckResult:
        """Connect with `config`, do the minimal round trip, close; never raise."""


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
                 parent: "Deadline | None" = None) -> None:
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

    def share(self, fraction: float) -> "Deadline":
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


class DriverChecker(Checker):
    """A checker whose `probe` does the library work; `check` times it and turns every outcome into a
    `CheckResult` (a `CheckFailed` into its cause, anything else into `unknown`), so it never raises."""

    library_share: ClassVar[float] = 0.8

    def check(self, config: BrokerConfig, timeout: float) -> CheckResult:
        """Connect with `config`, do the minimal round trip, close; never raise."""
        deadline = Deadline(timeout)
        try:
            identity = self.probe(config, deadline)
        except CheckFailed as failed:
            failed.__traceback__ = None
            return CheckResult(self.protocol, "down", deadline.latency_ms(), failed.cause, failed.message)
        except Exception as exc:  # noqa: BLE001 - a check never raises
            exc.__traceback__ = None
            return CheckResult(self.protocol, "down", deadline.latency_ms(), "unknown",
                               one_line(f"{type(exc).__name__}: {exc}"))
        return CheckResult(self.protocol, "up", deadline.latency_ms(), "ok", "", identity)

    @abstractmethod
    def probe(self, config: BrokerConfig, deadline: Deadline) -> dict[str, Any]:
        """Connect, do the minimal round trip and close within `deadline`; return the broker's identity
        or raise `CheckFailed`."""
