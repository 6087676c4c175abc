"""MQTT diagnosis: the handshake is a raw anonymous CONNECT answered by CONNACK (the broker speaks
MQTT, whatever it thinks of anonymous clients); the login is paho-mqtt's CONNECT with the configured
credentials (the CONNACK reason code); the operation subscribes to a private diagnostics topic
(`messaging-console/diagnostics/<random>`), publishes one message with the configured QoS and receives
it back.

paho is driven with `loop(timeout)` up to the deadline (its own waits follow the keepalive).
"""
from __future__ import annotations

import secrets
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ...brokers.base import BrokerConfig, Deadline, one_line
from ...brokers.mqtt import MQTT_GREETING, client_id, close_client, protocol_version
from ...brokers.net import classify, ssl_context
from .base import Link, Passed, Session, StepFailed, Wire

TOPIC_PREFIX = "messaging-console/diagnostics/"
_STEP = 0.01
_CONNACK_CODES = {0: "accepted", 1: "unacceptable protocol version", 2: "client identifier rejected",
                  3: "server unavailable", 4: "bad user name or password", 5: "not authorized"}
_AUTH_CODES = {134, 135, 140}


def _mqtt_complete(data: bytes) -> bool:
    length, shift, i = 0, 0, 1
    while i < len(data) and i <= 4:
        length |= (data[i] & 0x7F) << shift
        if not data[i] & 0x80:
            return len(data) >= i + 1 + length
        shift, i = shift + 7, i + 1
    return False


class MqttSession(Session):
    """MQTT: CONNACK, login reason code, subscribe/publish/receive on a private topic."""

    def __init__(self, config: BrokerConfig) -> None:
        super().__init__(config)
        self.client: mqtt.Client | None = None
        self.events: dict[str, Any] = {}
        self.version = protocol_version(config.options.get("protocol_version"))

    @classmethod
    def wire(cls) -> Wire:
        return Wire(MQTT_GREETING, _mqtt_complete)

    def describe_handshake(self, reply: bytes) -> str:
        code = reply[3] if len(reply) >= 4 else 0
        meaning = _CONNACK_CODES.get(code, f"code {code}")
        note = "" if code == 0 else " (credentials are checked in the next step)"
        return f"the broker answered an anonymous MQTT 3.1.1 CONNECT with CONNACK: {meaning}{note}"

    def auth(self, deadline: Deadline, link: Link) -> Passed:
        self.facts.update(username=self.config.username, login=self.login_words())
        version, label = self.version
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id(self.config.options),
                             protocol=version, clean_session=None if version == mqtt.MQTTv5 else True)
        self.client = client
        events = self.events
        client.on_connect = lambda _c, _u, flags, code, _p: events.setdefault("connack", code)
        client.on_disconnect = lambda _c, _u, _f, code, _p: events.setdefault("disconnect", code)
        client.on_subscribe = lambda _c, _u, _mid, codes, _p: events.setdefault("suback", codes)
        client.on_publish = lambda _c, _u, _mid, code, _p: events.setdefault("puback", code)
        client.on_message = lambda _c, _u, message: events.setdefault("message", message)
        if self.config.username:
            client.username_pw_set(self.config.username, self.config.password)
        if self.config.tls:
            client.tls_set_context(ssl_context(self.config))
        client.connect_timeout = max(deadline.remaining() / 2, 0.05)
        try:
            client.connect(self.config.host, self.config.port,
                           keepalive=int(self.config.options.get("keepalive") or 60))
        except (OSError, ValueError) as exc:
            found = classify(exc, during_tls=self.config.tls)
            raise StepFailed(found.cause if found else "unknown", found.message if found else one_line(repr(exc))) \
                from None
        self._drive(deadline, ("connack", "disconnect"))
        code = events.get("connack")
        if code is None:
            if "disconnect" in events:
                raise StepFailed("unknown", f"connection lost before CONNACK ({one_line(events['disconnect'])})")
            raise StepFailed("handshake_timeout", "no CONNACK within the time left")
        self.facts.update(reason_code=code.value, reason=str(code))
        if code.is_failure:
            words = f"CONNACK reason code {code.value} \"{code}\""
            if code.value in _AUTH_CODES:
                raise StepFailed("auth_failed", words, variant=None if self.config.username else "no_credentials")
            cause = {138: "access_denied", 132: "protocol_mismatch"}.get(code.value, "unknown")
            raise StepFailed(cause, words, words=words)
        who = f"logged in as {self.config.username}" if self.config.username else \
            "anonymous (no username configured; the broker accepts anonymous clients)"
        return Passed(f"CONNACK \"{code}\" (MQTT {label}): {who}")

    def operation(self, deadline: Deadline, link: Link) -> Passed:
        client = self.client
        assert client is not None
        topic = TOPIC_PREFIX + secrets.token_hex(6)
        configured = self.config.options.get("qos")
        qos = min(max(int(configured if configured not in (None, "") else 1), 0), 2)
        self.facts["topic"] = topic
        started = time.monotonic()
        client.subscribe(topic, qos=qos)
        self._drive(deadline, ("suback", "disconnect"))
        codes = self.events.get("suback") or []
        if any(code.is_failure for code in codes):
            raise StepFailed("access_denied", f"SUBACK refused {topic}: {codes[0]}", words=f"SUBACK {codes[0]}")
        if "suback" not in self.events:
            raise self._lost("SUBACK")
        payload = f"messaging-console diagnosis {secrets.token_hex(4)}".encode()
        client.publish(topic, payload, qos=qos)
        self._drive(deadline, ("message", "disconnect"))
        puback = self.events.get("puback")
        if puback is not None and getattr(puback, "is_failure", False):
            raise StepFailed("access_denied", f"PUBACK refused the publish on {topic}: {puback}",
                             words=f"PUBACK {puback}")
        message = self.events.get("message")
        if message is None:
            if "disconnect" in self.events:
                raise self._lost("the message")
            raise StepFailed("access_denied", f"published on {topic} but received nothing back", variant="no_echo")
        if message.payload != payload:
            raise StepFailed("unknown", f"received an unexpected message on {topic}")
        ms = (time.monotonic() - started) * 1000
        return Passed(f"subscribed, published and received 1 message on {topic} (QoS {qos}) in {ms:.1f} ms")

    def _lost(self, what: str) -> StepFailed:
        code = self.events.get("disconnect")
        if code is None:
            return StepFailed("handshake_timeout", f"no {what} within the time left")
        return StepFailed("access_denied", f"the broker closed the connection before {what} ({code}): "
                                           f"it refused the operation", words=str(code))

    def _drive(self, deadline: Deadline, until: tuple[str, ...]) -> None:
        assert self.client is not None
        while not any(key in self.events for key in until) and not deadline.expired:
            if self.client.loop(timeout=deadline.remaining(_STEP)) != mqtt.MQTT_ERR_SUCCESS:
                self.events.setdefault("disconnect", "connection lost")

    def identity(self) -> str:
        return f"MQTT {self.version[1]}, QoS round trip on a private topic"

    def close(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        close_client(client, drain=True)
