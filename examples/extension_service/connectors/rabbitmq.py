"""RabbitMQ connection of the example service (pika `BlockingConnection`, AMQP 0-9-1).

Settings: `nodes` (the console's list of `host:port`, tried in order; `addresses` too; else `host`/`port`),
`vhost`, `username`/`password` (PLAIN), `tls`, `tls_ca`/`tls_cert`/`tls_key` (PEM), `tls_verify_hostname`,
`exchange` (must exist: declared passively), `heartbeat`, `prefetch`, `connect_timeout`.

The proof: a private exclusive queue, a confirmed mandatory publish of a random payload to it through the
default exchange (never the configured exchange, whose other queues must not see it), and `basic_get`
until it is back. One thread owns the connection (pika is not thread-safe): it services heartbeats, runs
round trips handed to it, and reconnects with a backoff of 1, 2, 4 … 30 s when the connection is lost.
"""
from __future__ import annotations

import logging
import queue
import secrets
import ssl
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, Mapping

import pika
import pika.exceptions as pex
from pika.adapters.utils import connection_workflow as cw

from .base import ConnectFailed, Connection, int_setting, os_text

logging.getLogger("pika").setLevel(logging.CRITICAL)


class RabbitmqConnection(Connection):
    """An AMQP 0-9-1 connection (pika `BlockingConnection`) owned by one thread, reconnecting on loss."""

    protocol = "rabbitmq"
    default_port = 5672

    def __init__(self, settings: Mapping[str, Any], name: str) -> None:
        super().__init__(settings, name)
        self.vhost = str(settings.get("vhost") or "/")
        self.exchange = str(settings.get("exchange") or "")
        self.heartbeat = int_setting(settings.get("heartbeat"), 60)
        self.prefetch = int_setting(settings.get("prefetch"), 10)
        self.addresses = addresses(settings.get("addresses") or settings.get("nodes"), self.host, self.port)
        self.host, self.port = self.addresses[0]
        self._commands: queue.Queue[tuple[Callable[[], Any], Future]] = queue.Queue()
        self._closing = threading.Event()
        self._up = False
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._queue_name = ""
        self._thread = threading.Thread(target=self._run, name=f"rabbitmq-{name}", daemon=True)

    def open(self) -> None:
        """Connect (trying every address in order), prove one round trip, keep the connection serviced."""
        ready: Future = Future()
        self._commands.put((self._first_connect, ready))
        self._thread.start()
        try:
            ready.result(timeout=self.timeout * (len(self.addresses) + 1) + 5)
        except FutureTimeout:
            self.close()
            raise ConnectFailed(f"{self.broker}: no AMQP connection within the connect timeout") from None
        except ConnectFailed:
            self.close()
            raise

    @property
    def connected(self) -> bool:
        return self._up

    def round_trip(self) -> float:
        done: Future = Future()
        self._commands.put((self._round_trip, done))
        self._wake()
        try:
            return done.result(timeout=self.timeout + 5)
        except FutureTimeout:
            raise ConnectFailed(f"{self.broker}: the round trip did not finish within the connect "
                                "timeout") from None

    def _wake(self) -> None:
        """Make the connection thread's `process_data_events` return now (thread-safe)."""
        connection = self._connection
        if connection is not None:
            try:
                connection.add_callback_threadsafe(lambda: None)
            except Exception:  # noqa: BLE001 - closed meanwhile: the loop notices by itself
                pass

    def close(self) -> None:
        self._closed = True
        self._closing.set()
        self._wake()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=self.timeout + 5)
        super().close()

    # everything below runs in the connection's own thread
    def _parameters(self) -> list[pika.ConnectionParameters]:
        context = self._ssl()
        credentials = pika.PlainCredentials(str(self.settings.get("username") or "guest"),
                                            str(self.settings.get("password") or ""))
        return [pika.ConnectionParameters(
            host=host, port=port, virtual_host=self.vhost, credentials=credentials,
            ssl_options=pika.SSLOptions(context, host) if context is not None else None,
            heartbeat=self.heartbeat, socket_timeout=self.timeout, stack_timeout=self.timeout,
            blocked_connection_timeout=self.timeout, connection_attempts=1, retry_delay=0,
            client_properties={"connection_name": f"{self.name} (console example service)"},
        ) for host, port in self.addresses]

    def _connect(self) -> None:
        try:
            self._connection = pika.BlockingConnection(self._parameters())
            self._channel = self._connection.channel()
            self._channel.basic_qos(prefetch_count=self.prefetch)
            if self.exchange:
                self._channel.exchange_declare(self.exchange, passive=True)
            declared = self._channel.queue_declare("", exclusive=True, auto_delete=True)
            self._queue_name = declared.method.queue
            self._channel.confirm_delivery()
        except ConnectFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - pika raises many unrelated types
            self._drop()
            raise ConnectFailed(f"{self.broker}: {pika_text(exc)}") from None
        params = self._connection._impl.params
        self.host, self.port = params.host, params.port
        self._up = True

    def _first_connect(self) -> float:
        self._connect()
        return self._round_trip()

    def _round_trip(self) -> float:
        if self._channel is None or not self._up:
            raise ConnectFailed(f"{self.broker}: not connected")
        started = time.monotonic()
        payload = secrets.token_hex(8).encode()
        deadline = started + self.timeout
        try:
            self._channel.basic_publish("", self._queue_name, payload, mandatory=True,
                                        properties=pika.BasicProperties(expiration=str(int(self.timeout * 1000))))
            while True:
                method, _props, body = self._channel.basic_get(self._queue_name, auto_ack=True)
                if method is not None and body == payload:
                    return time.monotonic() - started
                if time.monotonic() >= deadline:
                    raise ConnectFailed(f"{self.broker}: the message published to the private queue did not "
                                        "come back within the connect timeout")
                self._connection.process_data_events(time_limit=0.01)
        except ConnectFailed:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ConnectFailed(f"{self.broker}: {pika_text(exc)}") from None

    def _run(self) -> None:
        backoff = 1.0
        next_attempt = 0.0
        while not self._closing.is_set():
            try:
                action, future = self._commands.get_nowait()
            except queue.Empty:
                action = None
            if action is not None:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(action())
                    except BaseException as exc:  # noqa: BLE001 - handed to the caller
                        future.set_exception(exc)
                if self._connection is None and action == self._first_connect:
                    return
                continue
            if self._connection is None:
                if time.monotonic() >= next_attempt:
                    try:
                        self._connect()
                        backoff = 1.0
                        self._event("reconnected")
                    except ConnectFailed as exc:
                        next_attempt = time.monotonic() + backoff
                        backoff = min(backoff * 2, 30.0)
                        self._event("reconnect-failed", str(exc).removeprefix(f"{self.broker}: "))
                self._closing.wait(0.1)
                continue
            try:
                self._connection.process_data_events(time_limit=0.2)
            except Exception as exc:  # noqa: BLE001 - the connection is lost; reconnect with a backoff
                self._drop()
                next_attempt = time.monotonic() + backoff
                self._event("connection-lost", pika_text(exc))
        self._drop()

    def _drop(self) -> None:
        self._up = False
        connection, self._connection, self._channel = self._connection, None, None
        if connection is None:
            return
        try:
            if connection.is_open:
                connection.close()
        except Exception:  # noqa: BLE001 - best-effort clean-up
            try:
                connection._impl._adapter_disconnect_stream()
            except Exception:  # noqa: BLE001
                pass


def addresses(value: Any, host: str, port: int) -> list[tuple[str, int]]:
    """The RabbitMQ addresses: a list of "host:port" / {"host", "port"} or a comma string; else host:port."""
    items: list[Any]
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = []
    found: list[tuple[str, int]] = []
    for item in items:
        if isinstance(item, Mapping):
            found.append((str(item.get("host") or host), int_setting(item.get("port"), port)))
            continue
        text = str(item).strip()
        if text.startswith("["):
            name, _, rest = text[1:].partition("]")
            found.append((name, int_setting(rest.removeprefix(":"), port)))
        elif text.count(":") == 1:
            name, _, number = text.partition(":")
            found.append((name or host, int_setting(number, port)))
        elif text:
            found.append((text, port))
    return found or [(host, port)]


def pika_text(exc: BaseException) -> str:
    """The broker's reason inside a pika exception (its reply text, or the socket / TLS error)."""
    closed = closed_by_broker(exc)
    if closed is not None:
        prefix = type(exc).__name__ + ": " if not isinstance(exc, (pex.ConnectionClosedByBroker,
                                                                   pex.ChannelClosedByBroker)) else ""
        return f"{prefix}{closed.reply_text} (reply code {closed.reply_code})"
    if isinstance(exc, pex.UnroutableError):
        return "the broker could not route the message to the private queue"
    inner: BaseException | None = exc
    seen = set()
    while inner is not None and id(inner) not in seen:
        seen.add(id(inner))
        if isinstance(inner, (ssl.SSLError, ssl.CertificateError, OSError)):
            return os_text(inner)
        if isinstance(inner, cw.AMQPConnectorStackTimeout):
            return "no AMQP handshake within the connect timeout"
        nested = getattr(inner, "exception", None)
        if nested is None and getattr(inner, "exceptions", None):
            nested = inner.exceptions[-1]
        if nested is None and inner.args and isinstance(inner.args[0], BaseException):
            nested = inner.args[0]
        inner = nested
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


def closed_by_broker(exc: BaseException) -> Any:
    """The ConnectionClosedByBroker / ChannelClosedByBroker inside `exc`, or None."""
    candidates = [exc, *(arg for arg in exc.args if isinstance(arg, BaseException))]
    for candidate in candidates:
        if isinstance(candidate, (pex.ConnectionClosedByBroker, pex.ChannelClosedByBroker)):
            return candidate
    return None
