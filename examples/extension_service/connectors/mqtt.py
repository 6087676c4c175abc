"""MQTT connection of the example service (paho-mqtt 2.x, `CallbackAPIVersion.VERSION2`).

Settings: `host`, `port`, `username`/`password`, `tls`, `tls_ca`/`tls_cert`/`tls_key` (PEM),
`tls_verify_hostname`, `client_id` (used as it is: the service's session), `protocol_version` (`3.1.1`,
`5`, `3.1`), `keepalive`, `clean_session`, `qos`, `connect_timeout`.

The proof: subscribe to a private topic `console-example/<service>/<random>`, publish a random payload
with the configured QoS, receive it, unsubscribe. After that paho's network thread runs the session and
reconnects by itself when the broker drops it. TCP_NODELAY is set on paho's socket: without it a QoS 1
round trip waits ~40 ms for Nagle and delayed ACK.
"""
from __future__ import annotations

import re
import secrets
import socket
import threading
import time
from typing import Any, Mapping

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from .base import ConnectFailed, Connection, bool_setting, int_setting, optional_setting, os_text

TOPIC_PREFIX = "console-example"


class MqttConnection(Connection):
    """An MQTT session (paho-mqtt 2.x) with the delivered client id, login, TLS and options."""

    protocol = "mqtt"
    default_port = 1883

    def __init__(self, settings: Mapping[str, Any], name: str) -> None:
        super().__init__(settings, name)
        self.version = mqtt_version(settings.get("protocol_version"))
        self.qos = min(max(int_setting(settings.get("qos"), 1), 0), 2)
        self.keepalive = int_setting(settings.get("keepalive"), 60)
        self.clean = bool_setting(settings.get("clean_session"), True)
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
            self.client.username_pw_set(str(self.settings["username"]), optional_setting(self.settings.get("password")))
        context = self._ssl()
        if context is not None:
            self.client.tls_set_context(context)
        self.client.connect_timeout = self.timeout
        try:
            clean_start = self.clean if self.version == mqtt.MQTTv5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY
            self.client.connect(self.host, self.port, keepalive=self.keepalive, clean_start=clean_start)
        except (OSError, ValueError) as exc:
            raise ConnectFailed(f"{self.broker}: {os_text(exc)}") from None
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


def mqtt_version(value: Any) -> int:
    """paho's protocol constant for a `protocol_version` setting (3.1, 3.1.1, 5)."""
    text = str(value or "3.1.1").strip().lower().removeprefix("mqttv").removeprefix("v")
    return {"3.1": mqtt.MQTTv31, "3": mqtt.MQTTv31, "5": mqtt.MQTTv5, "5.0": mqtt.MQTTv5}.get(text, mqtt.MQTTv311)
