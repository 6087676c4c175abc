"""Broker connections of the example service, built from the settings the console delivers.

`open_connection(protocol, settings, name)` connects with the real client library (paho-mqtt for MQTT,
pika for RabbitMQ), proves the connection with one real round trip (publish a random payload on a private
topic or queue and receive it back) and returns a `Connection` that stays open; any failure raises
`ConnectFailed` with the broker's own reason ("Not authorized", "ACCESS_REFUSED - Login was refused …",
"certificate verify failed: certificate has expired"). TLS material arrives as PEM text and is written to
a private temporary directory (0700, files 0600) that lives as long as the connection.

Settings are the console's field names (console/settings/schema.py): `host`, `port`, `username`,
`password`, `tls`, `tls_ca`, `tls_cert`, `tls_key`, `tls_verify_hostname`, `connect_timeout`; MQTT
`client_id`, `protocol_version`, `keepalive`, `clean_session`, `qos`; RabbitMQ `addresses`, `vhost`,
`exchange`, `heartbeat`, `prefetch`.
"""
from __future__ import annotations

import logging
import os
import queue
import re
import secrets
import shutil
import socket
import ssl
import tempfile
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, Mapping

import paho.mqtt.client as mqtt
import pika
import pika.exceptions as pex
from pika.adapters.utils import connection_workflow as cw
from paho.mqtt.enums import CallbackAPIVersion

PROTOCOLS = ("mqtt", "rabbitmq")
DEFAULT_PORTS = {"mqtt": 1883, "rabbitmq": 5672}
TOPIC_PREFIX = "console-example"

logging.getLogger("pika").setLevel(logging.CRITICAL)


class ConnectFailed(Exception):
    """The broker could not be used with these settings; the message is the broker's reason."""


class PemFiles:
    """The PEM texts of `tls_ca`, `tls_cert` and `tls_key` as files in a private temporary directory."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.directory: str | None = None
        self.paths: dict[str, str] = {}
        for name in ("tls_ca", "tls_cert", "tls_key"):
            text = settings.get(name)
            if text:
                self.paths[name] = self._write(name, str(text))

    def _write(self, name: str, text: str) -> str:
        if self.directory is None:
            self.directory = tempfile.mkdtemp(prefix="console-example-tls-")
            os.chmod(self.directory, 0o700)
        path = os.path.join(self.directory, f"{name}.pem")
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(text if text.endswith("\n") else text + "\n")
        return path

    def ssl_context(self, verify_hostname: bool) -> ssl.SSLContext:
        """A client context: the delivered CA (else the system store), client certificate, verification on."""
        try:
            context = ssl.create_default_context(cafile=self.paths.get("tls_ca"))
            if "tls_cert" in self.paths:
                context.load_cert_chain(self.paths["tls_cert"], self.paths.get("tls_key"))
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConnectFailed(f"the delivered TLS material cannot be loaded: {_ssl_text(exc)}") from None
        context.check_hostname = verify_hostname
        return context

    def remove(self) -> None:
        """Delete the files and their directory."""
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
            self.paths = {}


class Connection:
    """An open, proven broker connection."""

    protocol = ""

    def __init__(self, settings: Mapping[str, Any], name: str) -> None:
        self.settings = dict(settings)
        self.name = name
        self.host = str(settings.get("host") or "localhost")
        self.port = _int(settings.get("port"), DEFAULT_PORTS[self.protocol])
        self.timeout = float(_int(settings.get("connect_timeout"), 10))
        self.tls = _bool(settings.get("tls"), False)
        self.pem = PemFiles({})
        self.on_event: Callable[[str], None] | None = None
        self._closed = False

    @property
    def broker(self) -> str:
        """`host:port` of the broker in use."""
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        """True while the connection to the broker is up."""
        raise NotImplementedError

    def round_trip(self) -> float:
        """Publish one message on the private topic or queue and receive it; seconds taken."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the connection and remove its TLS files."""
        self.pem.remove()

    def _event(self, what: str, detail: str = "") -> None:
        """Tell `on_event` that the open connection was lost or came back (not while opening or closing)."""
        if self.on_event is not None and not self._closed:
            self.on_event(f"{what} {self.protocol} {self.broker}" + (f": {detail}" if detail else ""))

    def _ssl(self) -> ssl.SSLContext | None:
        """The TLS context from the delivered PEM text (written to private files now), or None."""
        if not self.tls:
            return None
        self.pem.remove()
        self.pem = PemFiles(self.settings)
        return self.pem.ssl_context(_bool(self.settings.get("tls_verify_hostname"), True))


class MqttConnection(Connection):
    """An MQTT session (paho-mqtt 2.x) with the delivered client id, login, TLS and options."""

    protocol = "mqtt"

    def __init__(self, settings: Mapping[str, Any], name: str) -> None:
        super().__init__(settings, name)
        self.version = _mqtt_version(settings.get("protocol_version"))
        self.qos = min(max(_int(settings.get("qos"), 1), 0), 2)
        self.keepalive = _int(settings.get("keepalive"), 60)
        self.clean = _bool(settings.get("clean_session"), True)
        self.client_id = str(settings.get("client_id") or "")
        self._events: dict[str, threading.Event] = {}
        self._outcome: dict[str, Any] = {}
        self._errors: list[str] = []
        self._lock = threading.Lock()
        self._threaded = False
        self._up = False
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=self.version,
                                  clean_session=None if self.version == mqtt.MQTTv5 else self.clean)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_log = self._on_log
        self.client.on_socket_open = _no_delay
        self.client.reconnect_delay_set(1, 30)

    # paho callbacks (network thread)
    def _on_connect(self, _client: Any, _userdata: Any, _flags: Any, code: Any, _props: Any) -> None:
        self._up = not code.is_failure
        self._signal("connack", code)
        if self._threaded:
            self._event("reconnected" if self._up else "reconnect-refused", "" if self._up else str(code))

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, code: Any, _props: Any) -> None:
        was_up, self._up = self._up, False
        self._signal("disconnect", code)
        if self._threaded and was_up:
            reason = str(code) if self.version == mqtt.MQTTv5 else "the connection was closed"
            self._event("connection-lost", reason)

    def _on_subscribe(self, _client: Any, _userdata: Any, mid: int, codes: list[Any], _props: Any) -> None:
        self._signal(f"suback-{mid}", codes)

    def _on_message(self, _client: Any, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._signal(f"message-{message.topic}", message.payload)

    def _on_log(self, _client: Any, _userdata: Any, level: int, text: str) -> None:
        if level <= mqtt.MQTT_LOG_ERR:
            self._errors.append(text)

    def _signal(self, key: str, value: Any) -> None:
        with self._lock:
            self._outcome[key] = value
            self._events.setdefault(key, threading.Event()).set()

    def _wait(self, key: str, deadline: float) -> Any:
        """The outcome `key` once it arrives (driving paho's loop unless its thread runs), else KeyError."""
        with self._lock:
            event = self._events.setdefault(key, threading.Event())
        while not event.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or ("disconnect" in self._outcome and key != "disconnect"):
                break
            if self._threaded:
                event.wait(min(left, 0.05))
            else:
                code = self.client.loop(timeout=min(left, 0.05))
                if code != mqtt.MQTT_ERR_SUCCESS and not event.is_set():
                    self._signal("disconnect", code)
        with self._lock:
            self._events.pop(key, None)
            if key not in self._outcome:
                raise KeyError(key)
            return self._outcome.pop(key)

    def open(self) -> None:
        """Connect, wait for CONNACK, prove one round trip, then run paho's network thread."""
        deadline = time.monotonic() + self.timeout
        if self.settings.get("username"):
            self.client.username_pw_set(str(self.settings["username"]), _optional(self.settings.get("password")))
        context = self._ssl()
        if context is not None:
            self.client.tls_set_context(context)
        self.client.connect_timeout = self.timeout
        try:
            clean_start = self.clean if self.version == mqtt.MQTTv5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY
            self.client.connect(self.host, self.port, keepalive=self.keepalive, clean_start=clean_start)
        except (OSError, ValueError) as exc:
            raise ConnectFailed(f"{self.broker}: {_os_text(exc)}") from None
        try:
            code = self._wait("connack", deadline)
        except KeyError:
            raise ConnectFailed(f"{self.broker}: {self._lost('no CONNACK within the connect timeout')}") from None
        if code.is_failure:
            raise ConnectFailed(f"{self.broker}: the broker refused the connection: {code}")
        self._round_trip(deadline)
        self._threaded = True
        self.client.loop_start()

    def _lost(self, fallback: str) -> str:
        if "disconnect" in self._outcome:
            detail = "; ".join(self._errors[-2:]) or str(self._outcome["disconnect"])
            detail = re.sub(r"\s*\(_ssl\.c:\d+\)", "", detail)
            hint = "; the broker may require a client certificate" if self.tls and not self.pem.paths.get(
                "tls_cert") else ""
            return f"connection lost before CONNACK ({detail}){hint}"
        return fallback

    @property
    def connected(self) -> bool:
        return self._up and self.client.is_connected()

    def round_trip(self) -> float:
        return self._round_trip(time.monotonic() + self.timeout)

    def _round_trip(self, deadline: float) -> float:
        started = time.monotonic()
        topic = f"{TOPIC_PREFIX}/{self.name}/{secrets.token_hex(6)}"
        payload = secrets.token_hex(8).encode()
        with self._lock:
            self._outcome.pop("disconnect", None)
        result, mid = self.client.subscribe(topic, qos=self.qos)
        if result != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectFailed(f"{self.broker}: subscribe failed: {mqtt.error_string(result)}")
        try:
            codes = self._wait(f"suback-{mid}", deadline)
        except KeyError:
            raise ConnectFailed(f"{self.broker}: no SUBACK for {topic} within the connect timeout") from None
        refused = [code for code in codes if code.is_failure]
        if refused:
            raise ConnectFailed(f"{self.broker}: the broker refused the subscription to {topic}: {refused[0]}")
        try:
            info = self.client.publish(topic, payload, qos=self.qos)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise ConnectFailed(f"{self.broker}: publish failed: {mqtt.error_string(info.rc)}")
            try:
                received = self._wait(f"message-{topic}", deadline)
            except KeyError:
                raise ConnectFailed(f"{self.broker}: the message published on {topic} did not come back within "
                                    "the connect timeout (an ACL may forbid the topic)") from None
            if received != payload:
                raise ConnectFailed(f"{self.broker}: received another payload on the private topic {topic}")
        finally:
            if self.client.is_connected():
                self.client.unsubscribe(topic)
        return time.monotonic() - started

    def close(self) -> None:
        """Disconnect (which also ends paho's reconnect wait, within a second) and stop its thread."""
        self._closed = True
        try:
            connected = self.client.is_connected()
            self.client.disconnect()
            if connected and not self._threaded:
                self.client.loop(timeout=0.01)
        except Exception:  # noqa: BLE001 - best-effort clean-up
            pass
        if self._threaded:
            self.client.loop_stop()
        try:
            self.client._reset_sockets()
        except Exception:  # noqa: BLE001 - paho leaves a socket open after a failed TLS handshake
            pass
        self._up = False
        super().close()


def _no_delay(_client: Any, _userdata: Any, sock: Any) -> None:
    """TCP_NODELAY on paho's socket: without it a QoS 1 round trip waits ~40 ms (Nagle + delayed ACK)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass


class RabbitmqConnection(Connection):
    """An AMQP 0-9-1 connection (pika `BlockingConnection`) owned by one thread, reconnecting on loss."""

    protocol = "rabbitmq"

    def __init__(self, settings: Mapping[str, Any], name: str) -> None:
        super().__init__(settings, name)
        self.vhost = str(settings.get("vhost") or "/")
        self.exchange = str(settings.get("exchange") or "")
        self.heartbeat = _int(settings.get("heartbeat"), 60)
        self.prefetch = _int(settings.get("prefetch"), 10)
        self.addresses = _addresses(settings.get("addresses"), self.host, self.port)
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
            raise ConnectFailed(f"{self.broker}: {_pika_text(exc)}") from None
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
            raise ConnectFailed(f"{self.broker}: {_pika_text(exc)}") from None

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
                self._event("connection-lost", _pika_text(exc))
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


CONNECTIONS: dict[str, type[Connection]] = {"mqtt": MqttConnection, "rabbitmq": RabbitmqConnection}


def open_connection(protocol: str, settings: Mapping[str, Any], name: str) -> Connection:
    """A connected, proven connection to the `protocol` broker; ConnectFailed with the broker's reason."""
    kind = CONNECTIONS.get(protocol)
    if kind is None:
        raise ConnectFailed(f"this service speaks {', '.join(PROTOCOLS)}, not {protocol}")
    try:
        connection = kind(settings, name)
    except (TypeError, ValueError) as exc:
        raise ConnectFailed(f"{settings.get('host') or 'localhost'}:{settings.get('port') or '-'}: "
                            f"the settings cannot be used: {exc}") from None
    try:
        connection.open()  # type: ignore[attr-defined]
    except ConnectFailed:
        connection.close()
        raise
    except Exception as exc:  # noqa: BLE001 - an unexpected library error still becomes a reason
        connection.close()
        raise ConnectFailed(f"{connection.broker}: {type(exc).__name__}: {exc}") from None
    return connection


def _int(value: Any, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _bool(value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _optional(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _mqtt_version(value: Any) -> int:
    text = str(value or "3.1.1").strip().lower().removeprefix("mqttv").removeprefix("v")
    return {"3.1": mqtt.MQTTv31, "3": mqtt.MQTTv31, "5": mqtt.MQTTv5, "5.0": mqtt.MQTTv5}.get(text, mqtt.MQTTv311)


def _addresses(value: Any, host: str, port: int) -> list[tuple[str, int]]:
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
            found.append((str(item.get("host") or host), _int(item.get("port"), port)))
            continue
        text = str(item).strip()
        if text.startswith("["):
            name, _, rest = text[1:].partition("]")
            found.append((name, _int(rest.removeprefix(":"), port)))
        elif text.count(":") == 1:
            name, _, number = text.partition(":")
            found.append((name or host, _int(number, port)))
        elif text:
            found.append((text, port))
    return found or [(host, port)]


def _ssl_text(exc: BaseException) -> str:
    text = getattr(exc, "verify_message", None)
    if text:
        return f"certificate verify failed: {text}"
    return re.sub(r"\s*\(_ssl\.c:\d+\)", "", str(exc) or type(exc).__name__)


def _os_text(exc: BaseException) -> str:
    if isinstance(exc, (ssl.SSLError, ssl.CertificateError)):
        return "TLS: " + _ssl_text(exc)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (TimeoutError, OSError)) and "timed out" in str(exc):
        return "connect timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _pika_text(exc: BaseException) -> str:
    """The broker's reason inside a pika exception (its reply text, or the socket / TLS error)."""
    closed = _closed_by_broker(exc)
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
            return _os_text(inner)
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


def _closed_by_broker(exc: BaseException) -> Any:
    """The ConnectionClosedByBroker / ChannelClosedByBroker inside `exc`, or None."""
    candidates = [exc, *(arg for arg in exc.args if isinstance(arg, BaseException))]
    for candidate in candidates:
        if isinstance(candidate, (pex.ConnectionClosedByBroker, pex.ChannelClosedByBroker)):
            return candidate
    return None
