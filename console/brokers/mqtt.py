"""MQTT driver (paho-mqtt 2.x, `CallbackAPIVersion.VERSION2`).

Check: connect, wait for CONNACK, disconnect. Diagnosis: the handshake is a raw anonymous CONNECT
answered by CONNACK (the broker speaks MQTT, whatever it thinks of anonymous clients); the login is
paho's CONNECT with the configured credentials (the CONNACK reason code); the operation subscribes to a
private diagnostics topic (`messaging-console/diagnostics/<random>`), publishes one message with the
configured QoS and receives it back. One classifier (`refusal`, `no_connack`, `connect_error`) names
paho's outcomes for both.

Connection string: `host`/`port` of the `BrokerConfig` (`mqtt://host:1883`, `mqtts://host:8883`).

Options honoured: `tls`, `tls_ca_file` (else the system store), `tls_cert_file`/`tls_key_file`,
`tls_verify_hostname`, `username`/`password`, `options["protocol_version"]` (`3.1.1` default, `5`,
`3.1`), `options["client_id"]` (used as the prefix of the check's own client id, so that the check never
takes over a live session of the same id: MQTT brokers disconnect the older of two connections with one
client id), `options["keepalive"]`. The check always starts a clean session, so it leaves none behind.

Identity: `protocol_version`, `session_present`.

Traps handled:
- paho's `connect_timeout` bounds the TCP connect and, separately, the TLS handshake: each gets half the
  budget when TLS is on;
- a silent port never sends CONNACK and paho would wait for the keepalive: the CONNACK wait is driven with
  `loop(timeout)` up to the deadline;
- a refusal comes as a CONNACK reason code (3.1.1 return codes are mapped to v5 reason codes by paho);
- a connection lost before CONNACK (plain client on a TLS port, another protocol on the port, a TLS alert
  for a missing client certificate) is named from paho's log line or by `net.diagnose` with an MQTT
  CONNECT probe.
"""
from __future__ import annotations

import secrets
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from .base import BrokerConfig, CheckFailed, Deadline, Driver, Greeting, Link, Passed, StepFailed, Wire, one_line
from .mqtt_spec import SPEC
from .net import classify, client_cert_failure, diagnose, ssl_context

MQTT_GREETING = Greeting(
    "MQTT", b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00", lambda reply: reply[:1] == b"\x20")
_VERSIONS = {"3.1": (mqtt.MQTTv31, "3.1"), "3": (mqtt.MQTTv31, "3.1"), "3.1.1": (mqtt.MQTTv311, "3.1.1"),
             "4": (mqtt.MQTTv311, "3.1.1"), "5": (mqtt.MQTTv5, "5"), "5.0": (mqtt.MQTTv5, "5")}
_AUTH_CODES = {134, 135, 140}
_CONNACK_CODES = {0: "accepted", 1: "unacceptable protocol version", 2: "client identifier rejected",
                  3: "server unavailable", 4: "bad user name or password", 5: "not authorized"}
TOPIC_PREFIX = "messaging-console/diagnostics/"
_STEP = 0.01
_CLIENT_CERT_WORDS = ("CERTIFICATE_REQUIRED", "BAD_CERTIFICATE", "UNKNOWN_CA", "CERTIFICATE_UNKNOWN",
                      "CERTIFICATE_EXPIRED", "ACCESS_DENIED")


def protocol_version(value: object) -> tuple[mqtt.MQTTProtocolVersion, str]:
    """paho's protocol constant and its label for an `options["protocol_version"]` value."""
    text = str(value or "3.1.1").strip().lower().removeprefix("mqttv").removeprefix("v")
    return _VERSIONS.get(text, (mqtt.MQTTv311, "3.1.1"))


def client_id(options: dict[str, Any] | Any) -> str:
    """The check's own client id: the configured one as a prefix, 23 characters at most."""
    base = str(options.get("client_id") or "messaging-console")
    return f"{base[:16]}-{secrets.token_hex(3)}"


def refusal(config: BrokerConfig, code: Any) -> StepFailed:
    """The cause of a CONNACK that refused the connection (3.1.1 return codes arrive mapped to v5 reason
    codes by paho): the one classifier of the check and the login."""
    words = f"CONNACK reason code {code.value} \"{code}\""
    if code.value in _AUTH_CODES:
        return StepFailed("auth_failed", words, variant=None if config.username else "no_credentials")
    cause = {138: "access_denied", 132: "protocol_mismatch"}.get(code.value, "unknown")
    return StepFailed(cause, words, words=words)


def no_connack(where: str, disconnect: Any | None, log: list[str], client_cert: bool | None = None) -> StepFailed:
    """The cause when no CONNACK came: a client certificate the broker's TLS alert refused or found missing
    (paho's log; `client_cert`: whether one is configured), a lost connection or silence (both `unsure`: a
    transport fault may hide behind them)."""
    words = "; ".join(log[-2:])
    alert = next((word for word in _CLIENT_CERT_WORDS if word in words), None)
    if alert:
        found = client_cert_failure(alert, client_cert, where)
        return StepFailed(found.cause, f"{found.message}: {words}", words=words)
    if disconnect is not None:
        detail = one_line(disconnect) + (f"; {words}" if words else "")
        return StepFailed("unknown", f"{where}: connection lost before CONNACK ({detail})", unsure=True)
    return StepFailed("handshake_timeout", f"{where}: no CONNACK within the time left", unsure=True)


def connect_error(where: str, exc: BaseException, tls: bool, client_cert: bool | None = None) -> StepFailed:
    """The cause of an exception from paho's connect; `unsure` (so that the check probes the transport) for
    timeouts, a TLS handshake ended without a word (a port that accepts and closes at once looks the same
    to paho) and TLS errors without a name (a TLS 1.2 broker's bare HANDSHAKE_FAILURE for a missing client
    certificate)."""
    found = classify(exc, during_tls=tls, where=where, client_cert=client_cert)
    if found is None:
        return StepFailed("unknown", f"{where}: {one_line(repr(exc))}", unsure=True)
    return StepFailed(found.cause, found.message,
                      unsure=found.cause in ("connect_timeout", "handshake_timeout", "tls_not_offered", "unknown"))


def _mqtt_complete(data: bytes) -> bool:
    length, shift, i = 0, 0, 1
    while i < len(data) and i <= 4:
        length |= (data[i] & 0x7F) << shift
        if not data[i] & 0x80:
            return len(data) >= i + 1 + length
        shift, i = shift + 7, i + 1
    return False


class MqttDriver(Driver):
    """MQTT with paho-mqtt: CONNECT, CONNACK, DISCONNECT for the check; CONNACK, the login's reason code and
    subscribe/publish/receive on a private topic for the diagnosis."""

    spec = SPEC
    texts = {
        "auth_failed": (
            "The MQTT broker answered CONNACK with reason code {reason_code} \"{reason}\" for {login}.",
            "Check the username and password (Mosquitto: an entry in the password_file, created with "
            "mosquitto_passwd); a listener with allow_anonymous false refuses clients without credentials."),
        "auth_failed/no_credentials": (
            "The MQTT broker does not accept anonymous clients: CONNACK reason code {reason_code} \"{reason}\".",
            "Set a username and password for this broker (the listener has allow_anonymous false)."),
        "access_denied": (
            "The MQTT broker refused the diagnostics subscription or publish on {topic}.{said}",
            "Allow {login} to publish and subscribe on messaging-console/diagnostics/# in the broker's ACL "
            "(Mosquitto acl_file: topic readwrite messaging-console/diagnostics/#)."),
        "access_denied/no_echo": (
            "The MQTT broker accepted the subscription and the publish on {topic} but never delivered the "
            "message within the time left: its ACL most likely drops it (MQTT 3.1.1 brokers drop denied "
            "publishes silently).",
            "Allow {login} to publish and subscribe on messaging-console/diagnostics/# in the broker's ACL "
            "(Mosquitto acl_file: topic readwrite messaging-console/diagnostics/#)."),
    }

    def __init__(self) -> None:
        super().__init__()
        self.client: mqtt.Client | None = None
        self.events: dict[str, Any] = {}
        self.log: list[str] = []
        self.version: tuple[mqtt.MQTTProtocolVersion, str] = protocol_version(None)

    def probe(self, config: BrokerConfig, deadline: Deadline) -> dict[str, Any]:
        """Connect and wait for CONNACK within `deadline`; the session's identity."""
        library = deadline.share(self.library_share)
        version, label = protocol_version(config.options.get("protocol_version"))
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id(config.options),
                             protocol=version, clean_session=None if version == mqtt.MQTTv5 else True)
        outcome: dict[str, Any] = {}
        log: list[str] = []
        client.on_connect = lambda _c, _u, flags, code, _p: outcome.setdefault("connack", (flags, code))
        client.on_disconnect = lambda _c, _u, _f, code, _p: outcome.setdefault("disconnect", code)
        client.on_log = lambda _c, _u, level, text: log.append(text) if level <= mqtt.MQTT_LOG_ERR else None
        if config.username:
            client.username_pw_set(config.username, config.password)
        if config.tls:
            client.tls_set_context(ssl_context(config))
        client.connect_timeout = max(library.remaining() / (2 if config.tls else 1), 0.01)
        keepalive = config.options.get("keepalive")
        keepalive = 60 if keepalive in (None, "") else int(keepalive)
        try:
            try:
                client.connect(config.host, config.port, keepalive=keepalive)
            except (OSError, ValueError) as exc:
                raise self._connect_error(config, deadline, exc) from None
            while not outcome and not library.expired:
                code = client.loop(timeout=library.remaining(0.01))
                if code != mqtt.MQTT_ERR_SUCCESS and not outcome:
                    outcome["disconnect"] = code
            return self._verdict(config, deadline, outcome, log, label)
        finally:
            close_client(client)

    def _verdict(self, config: BrokerConfig, deadline: Deadline, outcome: dict[str, Any], log: list[str],
                 label: str) -> dict[str, Any]:
        where = f"{config.host}:{config.port}"
        if "connack" in outcome:
            flags, code = outcome["connack"]
            if code.is_failure:
                raise refusal(config, code)
            deadline.done()
            return {"protocol_version": label, "session_present": bool(flags.session_present),
                    "tls": config.tls}
        failed = no_connack(where, outcome.get("disconnect"), log, bool(config.tls_cert_file))
        if failed.unsure:
            raise diagnose(config, config.host, config.port, deadline, MQTT_GREETING, failed)
        raise failed

    @staticmethod
    def _connect_error(config: BrokerConfig, deadline: Deadline, exc: BaseException) -> CheckFailed:
        failed = connect_error(f"{config.host}:{config.port}", exc, config.tls, bool(config.tls_cert_file))
        if failed.unsure:
            return diagnose(config, config.host, config.port, deadline, MQTT_GREETING, failed)
        return failed

    # -- the diagnosis ---------------------------------------------------------------------------------

    def begin(self, config: BrokerConfig) -> MqttDriver:
        super().begin(config)
        self.version = protocol_version(config.options.get("protocol_version"))
        return self

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
        client.on_log = lambda _c, _u, level, text: self.log.append(text) if level <= mqtt.MQTT_LOG_ERR else None
        if self.config.username:
            client.username_pw_set(self.config.username, self.config.password)
        if self.config.tls:
            client.tls_set_context(ssl_context(self.config))
        client.connect_timeout = max(deadline.remaining() / 2, 0.05)
        try:
            client.connect(self.config.host, self.config.port,
                           keepalive=int(self.config.options.get("keepalive") or 60))
        except (OSError, ValueError) as exc:
            raise connect_error(f"{self.config.host}:{self.config.port}", exc, self.config.tls,
                                bool(self.config.tls_cert_file)) from None
        self._drive(deadline, ("connack", "disconnect"))
        code = events.get("connack")
        if code is None:
            raise no_connack(f"{self.config.host}:{self.config.port}", events.get("disconnect"), self.log,
                             bool(self.config.tls_cert_file))
        self.facts.update(reason_code=code.value, reason=str(code))
        if code.is_failure:
            raise refusal(self.config, code)
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


def close_client(client: mqtt.Client, drain: bool = False) -> None:
    """Disconnect a paho client (optionally letting the DISCONNECT go out) and drop its sockets,
    which paho leaves open after a failed TLS handshake."""
    try:
        if client.is_connected():
            client.disconnect()
            if drain:
                client.loop(timeout=0.01)
    except Exception:  # noqa: BLE001 - best-effort clean-up
        pass
    try:
        client._reset_sockets()
    except Exception:  # noqa: BLE001
        pass
