"""RabbitMQ diagnosis: the handshake is the AMQP 0-9-1 protocol header answered by connection.start
(product, version, SASL mechanisms); the login is a pika connection to the vhost; the operation is a
passive declare of the configured exchange (or of amq.direct, present in every vhost, when the default
exchange is used), so nothing is ever created.

pika's blocking calls have no time limit of their own: the channel and the declare are driven through
the connection's asynchronous layer with `process_data_events(time_limit)` up to the deadline.
"""
from __future__ import annotations

import re
import ssl
from typing import Any

import pika
import pika.exceptions as pex
import pika.frame
from pika.adapters.utils import connection_workflow as cw

from ...brokers.base import BrokerConfig, Deadline, one_line
from ...brokers.net import classify
from ...brokers.rabbitmq import AMQP_GREETING, close_connection, connection_parameters
from .base import Link, Passed, Session, StepFailed, Wire

_STEP = 0.001
_CLOSED = re.compile(r"\((\d{3})\)\s*['\"](.+?)['\"]\)?,?\)?$")
_PROBE_EXCHANGE = "amq.direct"


def _amqp_complete(data: bytes) -> bool:
    if data.startswith(b"AMQP"):
        return len(data) >= 8
    return len(data) >= 7 and len(data) >= 8 + int.from_bytes(data[3:7], "big")


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class RabbitmqSession(Session):
    """RabbitMQ: connection.start, PLAIN login to the vhost, passive exchange declare."""

    def __init__(self, config: BrokerConfig) -> None:
        super().__init__(config)
        self.connection: pika.BlockingConnection | None = None
        self.vhost = str(config.options.get("vhost") or "/")
        self.facts.update(vhost=self.vhost, username=config.username or "guest")

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
            self.connection = pika.BlockingConnection(self._parameters(deadline))
        except Exception as exc:  # noqa: BLE001 - pika raises many unrelated types
            raise self._refusal(exc) from None
        who = self.config.username or "guest (pika's default; no username configured)"
        return Passed(f"logged in as {who} (PLAIN) to vhost {self.vhost}")

    def _parameters(self, deadline: Deadline) -> pika.ConnectionParameters:
        return connection_parameters(self.config, deadline.remaining(), self.vhost, "diagnosis",
                                     self.config.options.get("tls_server_name"))

    def _refusal(self, exc: BaseException) -> StepFailed:
        closed = _CLOSED.search(str(exc)) if isinstance(exc, (pex.AMQPConnectionError, pex.AMQPError)) else None
        if closed is not None:
            code, said = int(closed.group(1)), closed.group(2)
            detail = f"connection closed by the broker: ({code}) {said}"
            if code == 403 or isinstance(exc, (pex.ProbableAuthenticationError, pex.AuthenticationError)):
                return StepFailed("auth_failed", detail, words=said)
            cause = "not_found" if "not found" in said.lower() else "access_denied"
            return StepFailed(cause, detail, words=said, variant="vhost")
        if isinstance(exc, (pex.ProbableAuthenticationError, pex.AuthenticationError)):
            words = one_line(str(exc) or repr(exc))
            return StepFailed("auth_failed", words, words=words)
        inner: BaseException = exc
        if isinstance(exc, pex.AMQPConnectionError) and exc.args and isinstance(exc.args[0], BaseException):
            inner = exc.args[0]
        if isinstance(inner, cw.AMQPConnectorPhaseErrorBase) and inner.exception is not None:
            inner = inner.exception
        if isinstance(exc, cw.AMQPConnectorStackTimeout):
            return StepFailed("handshake_timeout", "no AMQP login within the time left")
        found = classify(inner, during_tls=isinstance(inner, ssl.SSLError))
        if found is not None:
            return StepFailed(found.cause, found.message)
        return StepFailed("unknown", one_line(repr(inner)))

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
            reason = events["closed"]
            code, text = getattr(reason, "reply_code", 0), _text(getattr(reason, "reply_text", reason))
            cause = {404: "not_found", 403: "access_denied"}.get(code, "unknown")
            raise StepFailed(cause, f"channel closed by the broker: ({code}) {text}", words=text,
                             variant="exchange")
        if exchange:
            return Passed(f"exchange {exchange} exists in vhost {self.vhost} (passive declare)")
        return Passed(f"no exchange configured (the default exchange always exists): channel opened and "
                      f"{_PROBE_EXCHANGE} declared passively in vhost {self.vhost}")

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
