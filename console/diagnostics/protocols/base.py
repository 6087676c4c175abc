"""What a protocol contributes to a diagnosis: its wire greeting (the raw handshake the engine sends)
and a session that logs in and runs one harmless operation with the protocol's client library.

The engine owns the shared flow (dns → tcp → tls → handshake, the deadline, the step records); a
protocol module only knows its own bytes and its own library.
"""
from __future__ import annotations

import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable

from ...brokers.base import BrokerConfig, CheckFailed, Deadline
from ...brokers.net import Greeting


class StepFailed(CheckFailed):
    """A failed step: a cause code, a one-line detail, and the concrete values the fix text names."""

    def __init__(self, cause: str, message: str, **facts: Any) -> None:
        super().__init__(cause, message)
        self.facts = facts


@dataclass
class Passed:
    """A step that passed (or does not apply), with its detail."""

    detail: str
    status: str = "ok"
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Wire:
    """A protocol's first exchange: the greeting, when its answer is complete, and whether the broker
    speaks first (NATS sends INFO on connect, in plaintext even before a TLS upgrade)."""

    greeting: Greeting
    complete: Callable[[bytes], bool]
    server_first: bool = False
    starttls: bool = False


class Link(typing.Protocol):
    """The engine's transport to the broker's first address, as the earlier steps checked it."""

    def ask(self, payload: bytes, timeout: float, complete: Callable[[bytes], bool]) -> bytes | None:
        """Send `payload` on a fresh connection (TLS when configured) and return the answer: None when the
        broker stayed silent, b"" when it closed the connection."""


def frame_complete(header: int) -> Callable[[bytes], bool]:
    """A `complete` test for frames that start with a big-endian length of `header` bytes."""
    def complete(data: bytes) -> bool:
        return len(data) >= header and len(data) >= header + int.from_bytes(data[:header], "big")
    return complete


class Session(ABC):
    """One protocol's part of one diagnosis; `close()` releases whatever the library opened."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = self.effective(config)
        self.facts: dict[str, Any] = {}

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
        """Release the library's connection; never raises."""

    def login_words(self) -> str:
        """How the session logs in, for details: user, token or anonymous."""
        if self.config.token:
            return "token"
        if self.config.username:
            return f"user {self.config.username}"
        return "anonymous"
