"""RabbitMQ checker (pika `BlockingConnection`): AMQP 0-9-1 connect, open one channel, close.

Connection string: `host`/`port` of the `BrokerConfig` (`amqp://host:5672`, `amqps://host:5671`).

Options honoured: `tls`, `tls_ca_file` (else the system store), `tls_cert_file`/`tls_key_file`,
`tls_verify_hostname`, `username`/`password` (PLAIN login; pika's guest/guest when no username is set),
`options["vhost"]` (default `/`), `options["heartbeat"]`.

Identity: `product`, `version`, `cluster_name` from the broker's `server_properties`, and `vhost`.

Traps handled:
- pika's defaults would wait `socket_timeout` 10 s and `stack_timeout` 15 s: both are set from the deadline,
  with one connection attempt and no retry delay;
- `AMQPConnectorStackTimeout` (a silent port) is not an `AMQPConnectionError`, and TLS errors come out as
  raw `ssl` exceptions: every exception is caught and classified;
- opening the channel is driven with `process_data_events(time_limit)` instead of `channel()`, whose wait
  has no limit;
- a lost stream (plain client on a TLS port, another protocol on the port) is diagnosed with an AMQP
  protocol header probe and a TLS probe (`net.diagnose`);
- pika logs every failed connection at ERROR with a traceback: its `pika` logger is set to CRITICAL (only
  the checks use pika; the check result carries the cause).
"""
from __future__ import annotations

import logging
import ssl
from typing import Any

import pika
import pika.exceptions as pex
from pika.adapters.utils import connection_workflow as cw

from .base import BrokerConfig, CheckFailed, Deadline, DriverChecker, one_line
from .net import Greeting, classify, diagnose, ssl_context

AMQP_GREETING = Greeting("AMQP", b"AMQP\x00\x00\x09\x01",
                         lambda reply: reply.startswith((b"\x01\x00\x00", b"AMQP")))

_LOGIN_ERRORS = (pex.ProbableAuthenticationError, pex.AuthenticationError)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _refusal(exc: BaseException) -> CheckFailed:
    words = one_line(str(exc) or repr(exc))
    lowered = words.lower()
    if isinstance(exc, _LOGIN_ERRORS) or "access_refused" in lowered:
        return CheckFailed("auth_failed", words)
    if "not found" in lowered:
        return CheckFailed("not_found", words)
    return CheckFailed("access_denied", words)


class RabbitmqChecker(DriverChecker):
    """Checks a RabbitMQ broker with pika: connect, open a channel, close."""

    protocol = "rabbitmq"
    default_port = 5672

    def probe(self, config: BrokerConfig, deadline: Deadline) -> dict[str, Any]:
        """Connect and open a channel within `deadline`; the broker's identity."""
        library = deadline.share(self.library_share)
        vhost = str(config.options.get("vhost") or "/")
        try:
            connection = pika.BlockingConnection(self._parameters(config, library, vhost))
        except CheckFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - pika raises many unrelated types
            raise self._classify(config, deadline, exc) from None
        try:
            self._open_channel(connection, library)
            deadline.done()
            props = connection._impl.server_properties or {}
            return {"product": _text(props.get("product", "")), "version": _text(props.get("version", "")),
                    "cluster_name": _text(props.get("cluster_name", "")), "vhost": vhost,
                    "tls": config.tls}
        finally:
            close_connection(connection)

    def _parameters(self, config: BrokerConfig, library: Deadline, vhost: str) -> pika.ConnectionParameters:
        return connection_parameters(config, library.remaining(), vhost, "check")

    @staticmethod
    def _open_channel(connection: pika.BlockingConnection, library: Deadline) -> None:
        opened: list[Any] = []
        connection._impl.channel(on_open_callback=opened.append)
        while not opened:
            if library.expired:
                raise CheckFailed("handshake_timeout", "the broker did not open a channel in time")
            connection.process_data_events(time_limit=min(library.remaining(), 0.0005))

    def _classify(self, config: BrokerConfig, deadline: Deadline, exc: BaseException) -> CheckFailed:
        host, port = config.host, config.port
        where = f"{host}:{port}"
        if isinstance(exc, (*_LOGIN_ERRORS, pex.ProbableAccessDeniedError, pex.ConnectionClosedByBroker)):
            return _refusal(exc)
        inner: BaseException = exc
        if isinstance(exc, pex.AMQPConnectionError) and exc.args and isinstance(exc.args[0], BaseException):
            inner = exc.args[0]
        if isinstance(inner, cw.AMQPConnectorPhaseErrorBase) and inner.exception is not None:
            inner = inner.exception
        if isinstance(inner, (ssl.SSLError, ssl.CertificateError)):
            return classify(inner, during_tls=True, where=where) or CheckFailed("unknown", repr(inner))
        if isinstance(inner, OSError):
            found = classify(inner, where=where)
            if found is not None:
                return found
        if isinstance(exc, cw.AMQPConnectorStackTimeout):
            fallback = CheckFailed("handshake_timeout", f"{where}: no AMQP handshake within the timeout")
        else:
            fallback = CheckFailed("unknown", f"{where}: {one_line(repr(inner))}")
        return diagnose(config, host, port, deadline, AMQP_GREETING, fallback)


def close_connection(connection: pika.BlockingConnection) -> None:
    """Close a pika connection, or drop its stream when a clean close is impossible."""
    try:
        if connection.is_open:
            connection.close()
    except Exception:  # noqa: BLE001 - best-effort clean-up
        try:
            connection._impl._adapter_disconnect_stream()
        except Exception:  # noqa: BLE001
            pass


def connection_parameters(config: BrokerConfig, budget: float, vhost: str, purpose: str,
                          server_name: str | None = None) -> pika.ConnectionParameters:
    """pika parameters for one attempt within `budget` seconds (socket and AMQP handshake), with the
    configured credentials, TLS and heartbeat."""
    logging.getLogger("pika").setLevel(logging.CRITICAL)   # its refusals are reported as causes
    budget = max(budget, 0.05)
    kwargs: dict[str, Any] = {}
    if config.username:
        kwargs["credentials"] = pika.PlainCredentials(config.username, config.password or "")
    if config.tls:
        kwargs["ssl_options"] = pika.SSLOptions(ssl_context(config), server_name or config.host)
    heartbeat = config.options.get("heartbeat")
    if heartbeat not in (None, ""):
        kwargs["heartbeat"] = int(heartbeat)
    return pika.ConnectionParameters(
        host=config.host, port=config.port, virtual_host=vhost, socket_timeout=budget,
        stack_timeout=budget, connection_attempts=1, retry_delay=0, blocked_connection_timeout=None,
        client_properties={"connection_name": f"messaging-console {purpose}"}, **kwargs)
