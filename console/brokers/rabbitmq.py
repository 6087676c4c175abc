"""RabbitMQ driver (pika `BlockingConnection`).

Check: AMQP 0-9-1 connect, open one channel, close. Diagnosis: the handshake is the AMQP 0-9-1 protocol
header answered by connection.start (product, version, SASL mechanisms); the login is a pika connection
to the vhost; the operation is a passive declare of the configured exchange (or of amq.direct, present in
every vhost, when the default exchange is used), so nothing is ever created, and then, because RabbitMQ
checks no permission on a passive declare, one confirmed, non-mandatory publish to that exchange (the
default exchange when none is configured) with a routing key nothing binds
(`messaging-console.diagnostics.<random>`): the broker drops it, and its confirm proves write permission.
The message expires at once (`expiration` "0") and carries the header `x-messaging-console-diagnosis`, since
a fanout exchange or a `#` binding delivers whatever the routing key.
One classifier (`RabbitmqDriver.classify`) names pika's errors for both, connection limits
(`connection_limit`: a 530 whose text begins like an access refusal) and refused client certificates
included.

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
  the checks use pika; the check result carries the cause) at the first check or diagnosis, not at import;
- pika's blocking calls have no time limit of their own: the diagnosis's channel and declare are driven
  through the connection's asynchronous layer with `process_data_events(time_limit)` up to the deadline.
"""
from __future__ import annotations

import logging
import re
import secrets
import ssl
from typing import Any

import pika
import pika.exceptions as pex
import pika.frame
import pika.spec
from pika.adapters.utils import connection_workflow as cw

from .base import BrokerConfig, CheckFailed, Deadline, Driver, Greeting, Link, Passed, StepFailed, Wire, one_line
from .net import classify, diagnose, ssl_context
from .rabbitmq_spec import SPEC

AMQP_GREETING = Greeting("AMQP", b"AMQP\x00\x00\x09\x01",
                         lambda reply: reply.startswith((b"\x01\x00\x00", b"AMQP")))

_LOGIN_ERRORS = (pex.ProbableAuthenticationError, pex.AuthenticationError)
_STEP = 0.001
_CLOSED = re.compile(r"\((\d{3})\)\s*['\"](.+?)['\"]\)?,?\)?$")
_PROBE_EXCHANGE = "amq.direct"
ROUTING_KEY_PREFIX = "messaging-console.diagnostics."
# expiration "0": never kept in a queue (only a consumer ready at that moment could get it, through a fanout
# exchange or a "#" binding, which ignore the routing key), marked so that such a consumer can skip it
_PROBE_PROPERTIES = pika.BasicProperties(app_id="messaging-console", content_type="text/plain", expiration="0",
                                         headers={"x-messaging-console-diagnosis": True}, delivery_mode=1)
_LIMIT = re.compile(r"connection limit \((\d+)\)")



def _quiet_pika() -> None:
    """Silence pika's ERROR tracebacks of failed connections (the check or diagnosis carries the cause):
    done at first use, never at import, so that importing the driver changes no logging set-up."""
    logger = logging.getLogger("pika")
    if logger.level < logging.CRITICAL:
        logger.setLevel(logging.CRITICAL)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _amqp_complete(data: bytes) -> bool:
    if data.startswith(b"AMQP"):
        return len(data) >= 8
    return len(data) >= 7 and len(data) >= 8 + int.from_bytes(data[3:7], "big")


class RabbitmqDriver(Driver):
    """RabbitMQ with pika: connect and open a channel for the check; connection.start, PLAIN login to the
    vhost and a passive exchange declare for the diagnosis."""

    spec = SPEC
    texts = {
        "auth_failed": (
            "RabbitMQ refused the login of {username}.{said}",
            "Check the username and password of {username} (rabbitmqctl authenticate_user {username} "
            "<password> on the broker tells whether they match); note that the built-in guest user may log "
            "in only from localhost."),
        "sasl_mechanism_unsupported": (
            "RabbitMQ offers the SASL mechanisms {offered}, not PLAIN (the console logs in with PLAIN).",
            "Enable PLAIN on the broker (auth_mechanisms.1 = PLAIN in rabbitmq.conf) or use a broker listener "
            "that offers it."),
        "access_denied/vhost": (
            "User {username} may not use the vhost {vhost}.{said}",
            "Grant permissions: rabbitmqctl set_permissions -p {vhost} {username} '.*' '.*' '.*' (or Admin → "
            "Users → {username} → Set permission in the management UI), or use a vhost the user may access."),
        "access_denied/exchange": (
            "User {username} may not use the exchange {exchange} in vhost {vhost}.{said}",
            "Grant the user permissions on {exchange} in vhost {vhost} (rabbitmqctl set_permissions -p "
            "{vhost} {username} ...)."),
        "access_denied/publish": (
            "User {username} may not publish to the exchange {publish_exchange} in vhost {vhost}: the broker "
            "refused the diagnosis's publish.{said}",
            "Grant {username} write permission on {publish_exchange} in vhost {vhost}: rabbitmqctl "
            "set_permissions -p {vhost} {username} '<configure>' '<write>' '<read>' with a write pattern that "
            "matches {publish_exchange} (for example '^{publish_exchange}$' or '.*'); rabbitmqctl "
            "list_user_permissions {username} shows the current patterns."),
        "connection_limit/vhost": (
            "RabbitMQ refused the connection to vhost {vhost}: the vhost's connection limit ({limit}) is "
            "reached.{said}",
            "Raise the vhost's limit (rabbitmqctl set_vhost_limits -p {vhost} '{{\"max-connections\": <n>}}'; "
            "rabbitmqctl list_vhost_limits -p {vhost} shows it) or close idle connections to {vhost} "
            "(rabbitmqctl list_connections vhost user name)."),
        "connection_limit/user": (
            "RabbitMQ refused the connection for user {username}: the user's connection limit ({limit}) is "
            "reached.{said}",
            "Raise the user's limit (rabbitmqctl set_user_limits {username} '{{\"max-connections\": <n>}}'; "
            "rabbitmqctl list_user_limits --user {username} shows it) or close idle connections of "
            "{username} (rabbitmqctl list_connections user name)."),
        "not_found/vhost": (
            "The vhost {vhost} does not exist on RabbitMQ.{said}",
            "Create it and grant the user access (rabbitmqctl add_vhost {vhost}; rabbitmqctl set_permissions "
            "-p {vhost} {username} '.*' '.*' '.*'), or correct the vhost setting (names are case-sensitive; "
            "the default vhost is \"/\")."),
        "not_found/exchange": (
            "The exchange {exchange} does not exist in the vhost {vhost}.{said}",
            "Declare it (rabbitmqadmin -V {vhost} declare exchange name={exchange} type=topic durable=true), "
            "let the application declare it at start-up, or correct the exchange setting; the diagnosis "
            "only declares passively and never creates it."),
    }

    def __init__(self) -> None:
        super().__init__()
        self.connection: pika.BlockingConnection | None = None
        self.vhost = "/"

    def probe(self, config: BrokerConfig, deadline: Deadline) -> dict[str, Any]:
        """Connect and open a channel within `deadline`; the broker's identity."""
        _quiet_pika()
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
        failed = self.classify(exc, f"{config.host}:{config.port}", client_cert=bool(config.tls_cert_file))
        if failed.unsure:
            return diagnose(config, config.host, config.port, deadline, AMQP_GREETING, failed)
        return failed

    @staticmethod
    def classify(exc: BaseException, where: str = "", client_cert: bool | None = None) -> StepFailed:
        """The cause of a failed pika connection, for the check and the login alike (`client_cert`: whether
        a client certificate is configured)."""
        closed = _CLOSED.search(str(exc)) if isinstance(exc, (pex.AMQPConnectionError, pex.AMQPError)) else None
        if closed is not None:
            code, said = int(closed.group(1)), closed.group(2)
            detail = f"connection closed by the broker: ({code}) {said}"
            limit = _LIMIT.search(said)
            if limit is not None:
                return StepFailed("connection_limit", detail, words=said, limit=int(limit.group(1)),
                                  variant="vhost" if "access to vhost" in said else "user")
            if code == 403 or isinstance(exc, _LOGIN_ERRORS):
                return StepFailed("auth_failed", detail, words=said)
            cause = "not_found" if "not found" in said.lower() else "access_denied"
            return StepFailed(cause, detail, words=said, variant="vhost")
        words = one_line(str(exc) or repr(exc))
        if isinstance(exc, _LOGIN_ERRORS) or "access_refused" in words.lower():
            return StepFailed("auth_failed", words, words=words)
        if isinstance(exc, (pex.ProbableAccessDeniedError, pex.ConnectionClosedByBroker)):
            cause = "not_found" if "not found" in words.lower() else "access_denied"
            return StepFailed(cause, words, words=words, variant="vhost")
        inner: BaseException = exc
        if isinstance(exc, pex.AMQPConnectionError) and exc.args and isinstance(exc.args[0], BaseException):
            inner = exc.args[0]
        if isinstance(inner, cw.AMQPConnectorPhaseErrorBase) and inner.exception is not None:
            inner = inner.exception
        if isinstance(inner, (ssl.SSLError, ssl.CertificateError)):
            found = classify(inner, during_tls=True, where=where, client_cert=client_cert)
            if found is None:
                return StepFailed("unknown", repr(inner))
            return StepFailed(found.cause, found.message, unsure=found.cause in ("tls_not_offered", "unknown"))
        if isinstance(exc, cw.AMQPConnectorStackTimeout):
            return StepFailed("handshake_timeout", f"{where}: no AMQP handshake within the time left", unsure=True)
        if isinstance(inner, pex.IncompatibleProtocolError) or isinstance(exc, pex.IncompatibleProtocolError):
            return StepFailed("protocol_mismatch", f"{where}: the answer is not AMQP 0-9-1 ({one_line(inner)})",
                              unsure=True)
        if isinstance(inner, OSError):
            found = classify(inner, where=where)
            if found is not None:       # pika's connect gave up with the library's share of the budget:
                return StepFailed(found.cause, found.message,   # the rest confirms it, up to the deadline
                                  unsure=found.cause == "connect_timeout")
        return StepFailed("unknown", f"{where}: {one_line(repr(inner))}", unsure=True)

    # -- the diagnosis ---------------------------------------------------------------------------------

    def begin(self, config: BrokerConfig) -> RabbitmqDriver:
        _quiet_pika()
        super().begin(config)
        self.vhost = str(config.options.get("vhost") or "/")
        self.facts.update(vhost=self.vhost, username=config.username or "guest")
        return self

    @classmethod
    def wire(cls) -> Wire:
        return Wire(AMQP_GREETING, _amqp_complete)

    def describe_handshake(self, reply: bytes) -> str:
        if reply.startswith(b"AMQP"):
            version = ".".join(str(b) for b in reply[5:8])
            raise StepFailed("protocol_mismatch", f"the broker answered with the protocol header of AMQP "
                                                  f"{version}: it does not speak AMQP 0-9-1",
                             speaks=f"AMQP {version}")
        try:
            _, frame = pika.frame.decode_frame(reply)
            start = frame.method
            props = start.server_properties or {}
        except Exception:  # noqa: BLE001 - a partial or odd frame is still an AMQP answer
            return "the broker answered the AMQP 0-9-1 protocol header"
        product, version = _text(props.get("product", "AMQP broker")), _text(props.get("version", ""))
        offered = _text(start.mechanisms)
        self.facts.update(product=product, version=version, offered=offered,
                          cluster=_text(props.get("cluster_name", "")))
        protocol = "0-9-1" if (start.version_major, start.version_minor) == (0, 9) else \
            f"{start.version_major}-{start.version_minor}"
        return f"{product} {version} answered connection.start (AMQP {protocol}, SASL mechanisms {offered})"

    def auth(self, deadline: Deadline, link: Link) -> Passed:
        offered = str(self.facts.get("offered") or "")
        if offered and "PLAIN" not in offered.split():
            raise StepFailed("sasl_mechanism_unsupported", f"the broker offers {offered}, not PLAIN",
                             mechanism="PLAIN")
        try:
            self.connection = pika.BlockingConnection(self._login_parameters(deadline))
        except Exception as exc:  # noqa: BLE001 - pika raises many unrelated types
            raise self.classify(exc, client_cert=bool(self.config.tls_cert_file)) from None
        who = self.config.username or "guest (pika's default; no username configured)"
        return Passed(f"logged in as {who} (PLAIN) to vhost {self.vhost}")

    def _login_parameters(self, deadline: Deadline) -> pika.ConnectionParameters:
        return connection_parameters(self.config, deadline.remaining(), self.vhost, "diagnosis",
                                     self.config.options.get("tls_server_name"))

    def operation(self, deadline: Deadline, link: Link) -> Passed:
        assert self.connection is not None
        exchange = str(self.config.options.get("exchange") or "")
        target = exchange or _PROBE_EXCHANGE
        self.facts["exchange"] = exchange or "(default)"
        events: dict[str, Any] = {}
        impl = self.connection._impl
        channel = impl.channel(on_open_callback=lambda ch: events.setdefault("open", ch))
        channel.add_on_close_callback(lambda _ch, reason: events.setdefault("closed", reason))
        self._drive(deadline, events, ("open", "closed"), "open a channel")
        if "closed" not in events:
            channel.exchange_declare(exchange=target, passive=True,
                                     callback=lambda frame: events.setdefault("declared", frame))
            self._drive(deadline, events, ("declared", "closed"), f"declare {target} passively")
        if "closed" in events:
            raise self._channel_closed(events["closed"], "exchange")
        declared = f"exchange {exchange} exists in vhost {self.vhost} (passive declare)" if exchange else \
            (f"no exchange configured (the default exchange always exists): {_PROBE_EXCHANGE} declared passively "
             f"in vhost {self.vhost}")
        return Passed(f"{declared}; {self._publish(deadline, channel, events, exchange)}")

    def _publish(self, deadline: Deadline, channel: Any, events: dict[str, Any], exchange: str) -> str:
        """One confirmed, non-mandatory publish to `exchange` with a routing key nothing binds: RabbitMQ
        checks write permission on the publish only (not on a passive declare)."""
        shown = exchange or "amq.default"
        self.facts["publish_exchange"] = shown
        routing_key = ROUTING_KEY_PREFIX + secrets.token_hex(6)
        channel.confirm_delivery(lambda frame: events.setdefault("confirm", frame),
                                 callback=lambda frame: events.setdefault("confirming", frame))
        self._drive(deadline, events, ("confirming", "closed"), "switch the channel to publisher confirms")
        if "closed" not in events:
            channel.basic_publish(exchange, routing_key, b"messaging-console diagnosis (dropped: nothing binds "
                                                         b"this routing key)", properties=_PROBE_PROPERTIES,
                                  mandatory=False)
            self._drive(deadline, events, ("confirm", "closed"), f"confirm a publish to {shown}")
        if "closed" in events:
            raise self._channel_closed(events["closed"], "publish")
        method = getattr(events["confirm"], "method", None)
        if isinstance(method, pika.spec.Basic.Nack):
            raise StepFailed("unknown", f"the broker refused (nack) the publish to {shown}", words="Basic.Nack")
        return (f"published 1 confirmed, non-mandatory message to {shown} with the routing key {routing_key}, "
                f"which nothing binds (the broker dropped it): write permission proven")

    @staticmethod
    def _channel_closed(reason: Any, variant: str) -> StepFailed:
        code, text = getattr(reason, "reply_code", 0), _text(getattr(reason, "reply_text", reason))
        cause = {404: "not_found", 403: "access_denied"}.get(code, "unknown")
        return StepFailed(cause, f"channel closed by the broker: ({code}) {text}", words=text,
                          variant="exchange" if cause == "not_found" else variant)

    def _drive(self, deadline: Deadline, events: dict[str, Any], until: tuple[str, ...], what: str) -> None:
        assert self.connection is not None
        while not any(key in events for key in until):
            if deadline.expired:
                raise StepFailed("handshake_timeout", f"the broker did not {what} within the time left")
            self.connection.process_data_events(time_limit=deadline.remaining(_STEP))

    def identity(self) -> str:
        return f"{self.facts.get('product', 'RabbitMQ')} {self.facts.get('version', '')}".strip() + \
            f", vhost {self.vhost}"

    def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            close_connection(connection)


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
    _quiet_pika()
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
