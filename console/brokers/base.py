"""The small interface every protocol driver implements: one checker per protocol.

A checker gets a `BrokerConfig` (the *effective* settings of one protocol, secrets decrypted, TLS
material written to PEM files) and returns a `CheckResult`. It never raises and never outlives its
timeout.
"""
from __future__ import annotations

import datetime as dt
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
