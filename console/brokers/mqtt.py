"""MQTT checker (paho-mqtt 2.x, `CallbackAPIVersion.VERSION2`): connect, wait for CONNACK, disconnect.

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
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from .base import BrokerConfig, CheckFailed, Deadline, DriverChecker, one_line
from .net import Greeting, classify, diagnose, ssl_context

MQTT_GREETING = Greeting(
    "MQTT", b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00", lambda reply: reply[:1] == b"\x20")
_VERSIONS = {"3.1": (mqtt.MQTTv31, "3.1"), "3": (mqtt.MQTTv31, "3.1"), "3.1.1": (mqtt.MQTTv311, "3.1.1"),
             "4": (mqtt.MQTTv311, "3.1.1"), "5": (mqtt.MQTTv5, "5"), "5.0": (mqtt.MQTTv5, "5")}
_AUTH_CODES = {134, 135, 140}
_CLIENT_CERT_WORDS = ("CERTIFICATE_REQUIRED", "BAD_CERTIFICATE", "UNKNOWN_CA", "CERTIFICATE_UNKNOWN",
                      "ACCESS_DENIED")


def protocol_version(value: object) -> tuple[int, str]:
    """paho's protocol constant and its label for an `options["protocol_version"]` value."""
    text = str(value or "3.1.1").strip().lower().removeprefix("mqttv").removeprefix("v")
    return _VERSIONS.get(text, (mqtt.MQTTv311, "3.1.1"))


def client_id(options: dict[str, Any] | Any) -> str:
    """The check's own client id: the configured one as a prefix, 23 characters at most."""
    base = str(options.get("client_id") or "messaging-console")
    return f"{base[:16]}-{secrets.token_hex(3)}"


def _refusal(code: Any) -> CheckFailed:
    words = f"the broker refused the connection: {code} (reason code {code.value})"
    if code.value in _AUTH_CODES:
        return CheckFailed("auth_failed", words)
    if code.value == 138:
        return CheckFailed("access_denied", words)
    if code.value == 132:
        return CheckFailed("protocol_mismatch", words)
    return CheckFailed("unknown", words)


class MqttChecker(DriverChecker):
    """Checks an MQTT broker with paho-mqtt: CONNECT, CONNACK, DISCONNECT."""

    protocol = "mqtt"
    default_port = 1883

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
                raise _refusal(code)
            deadline.done()
            return {"protocol_version": label, "session_present": bool(flags.session_present),
                    "tls": config.tls}
        words = "; ".join(log[-2:])
        if any(word in words for word in _CLIENT_CERT_WORDS):
            raise CheckFailed("auth_failed", f"{where}: the broker rejected the client certificate ({words})")
        if "disconnect" in outcome:
            detail = one_line(outcome["disconnect"]) + (f"; {words}" if words else "")
            fallback = CheckFailed("unknown", f"{where}: connection lost before CONNACK ({detail})")
        else:
            fallback = CheckFailed("handshake_timeout", f"{where}: no CONNACK within the timeout")
        raise diagnose(config, config.host, config.port, deadline, MQTT_GREETING, fallback)

    @staticmethod
    def _connect_error(config: BrokerConfig, deadline: Deadline, exc: BaseException) -> CheckFailed:
        where = f"{config.host}:{config.port}"
        found = classify(exc, during_tls=config.tls, where=where)
        if found is not None and found.cause not in ("connect_timeout", "handshake_timeout"):
            return found
        fallback = found or CheckFailed("unknown", f"{where}: {one_line(repr(exc))}")
        return diagnose(config, config.host, config.port, deadline, MQTT_GREETING, fallback)


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
