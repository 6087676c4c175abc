"""Pulsar diagnosis: the handshake is a raw CONNECT answered by CONNECTED (or by an ERROR, which still
proves the port speaks Pulsar); the login is a raw CONNECT carrying the configured token or basic
credentials (OAuth2 tokens are fetched by the client library, so they are checked with the operation);
the operation is pulsar-client's lookup of the configured topic's partitions, run by the console's
Pulsar checker (which owns the library's process-wide logger and its careful client teardown).

The service URL decides TLS: `pulsar+ssl://` means TLS, whatever the `tls` flag says.
"""
from __future__ import annotations

from dataclasses import replace

from ...brokers.base import BrokerConfig, Deadline
from ...brokers.pulsar import DEFAULT_TOPIC, PULSAR_GREETING, PulsarChecker, service_url
from ...settings.values import split_host_port
from .base import Link, Passed, Session, StepFailed, Wire, frame_complete

_CONNECTED, _ERROR, _AUTH_CHALLENGE = 3, 14, 36
_PROTOCOL_VERSION = 15
_SERVER_ERRORS = {0: "UnknownError", 1: "MetadataError", 2: "PersistenceError", 3: "AuthenticationError",
                  4: "AuthorizationError", 5: "ConsumerBusy", 6: "ServiceNotReady"}


def _varint(value: int) -> bytes:
    out = b""
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            return out + bytes([low])
        out += bytes([low | 0x80])


def _field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def connect_frame(method: str, data: bytes) -> bytes:
    """A CONNECT frame with `auth_method_name` and `auth_data`."""
    connect = (_field(1, b"messaging-console") + _field(3, data) + _field(4, _PROTOCOL_VERSION)
               + _field(5, method.encode()))
    command = _field(1, 2) + _field(2, connect)
    return (len(command) + 4).to_bytes(4, "big") + len(command).to_bytes(4, "big") + command


def _fields(data: bytes) -> dict[int, int | bytes]:
    out: dict[int, int | bytes] = {}
    i = 0
    while i < len(data):
        key, i = _read_varint(data, i)
        number, kind = key >> 3, key & 7
        if kind == 0:
            out[number], i = _read_varint(data, i)
        elif kind == 2:
            size, i = _read_varint(data, i)
            out[number], i = data[i:i + size], i + size
        else:
            break
    return out


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while i < len(data):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not byte & 0x80:
            break
    return value, i


def parse_command(reply: bytes) -> tuple[int, dict[int, int | bytes]]:
    """The type of the first command in `reply` and the fields of its body."""
    size = int.from_bytes(reply[4:8], "big") if len(reply) >= 8 else 0
    top = _fields(reply[8:8 + size])
    kind = int(top.get(1, 0))  # type: ignore[arg-type]
    body = top.get(kind)
    return kind, _fields(body) if isinstance(body, bytes) else {}


def _text(value: int | bytes | None) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


class PulsarSession(Session):
    """Pulsar: CONNECT, CONNECT with credentials, topic lookup with pulsar-client."""

    @staticmethod
    def effective(config: BrokerConfig) -> BrokerConfig:
        url = service_url(config)
        tls = url.startswith("pulsar+ssl://")
        hosts = tuple(split_host_port(item, 6651 if tls else 6650) for item in url.split("://", 1)[1].split(","))
        return replace(config, url=url, tls=tls, host=hosts[0][0], port=hosts[0][1],
                       servers=hosts if len(hosts) > 1 else ())

    @classmethod
    def wire(cls) -> Wire:
        return Wire(PULSAR_GREETING, frame_complete(4))

    def describe_handshake(self, reply: bytes) -> str:
        kind, body = parse_command(reply)
        if kind == _CONNECTED:
            self.facts["version"] = version = _text(body.get(1)) or "Pulsar"
            self.facts["anonymous_ok"] = True
            return f"{version} answered CONNECT with CONNECTED (protocol version {_text(body.get(2))})"
        if kind == _ERROR:
            error = _SERVER_ERRORS.get(int(body.get(2, 0)), str(body.get(2)))  # type: ignore[arg-type]
            return f"the broker answered an anonymous CONNECT with {error}: {_text(body.get(3))}"
        return f"the broker answered CONNECT (command {kind})"

    def auth(self, deadline: Deadline, link: Link) -> Passed:
        config = self.config
        self.facts["login"] = self.login_words()
        if config.token:
            method, data = "token", config.token.encode()
        elif config.options.get("oauth2_issuer_url"):
            self.facts["login"] = "OAuth2"
            return Passed("OAuth2 client credentials: the token is fetched by the client library, so the "
                          "login is checked with the lookup (next step)")
        elif config.username:
            method, data = "basic", f"{config.username}:{config.password or ''}".encode()
        elif self.facts.get("anonymous_ok"):
            return Passed("anonymous: the broker answered CONNECT without credentials")
        else:
            raise StepFailed("auth_failed", "the broker refused an anonymous CONNECT and no credentials are set",
                             variant="no_credentials")
        reply = link.ask(connect_frame(method, data), deadline.remaining(), frame_complete(4))
        if not reply:
            raise StepFailed("auth_failed", f"the broker closed the connection on the {method} CONNECT")
        kind, body = parse_command(reply)
        if kind == _CONNECTED:
            return Passed(f"CONNECT with {method} authentication accepted")
        if kind == _AUTH_CHALLENGE:
            return Passed(f"the broker answered the {method} CONNECT with an authentication challenge: "
                          f"checked by the client library with the lookup (next step)")
        error = _SERVER_ERRORS.get(int(body.get(2, 0)), str(body.get(2)))  # type: ignore[arg-type]
        words = _text(body.get(3)) or error
        cause = "access_denied" if error == "AuthorizationError" else "auth_failed"
        raise StepFailed(cause, f"{error}: {words}", words=words)

    def operation(self, deadline: Deadline, link: Link) -> Passed:
        topic = str(self.config.options.get("topic") or DEFAULT_TOPIC)
        self.facts["topic"] = topic
        config = replace(self.config, options={**self.config.options, "topic": topic})
        result = PulsarChecker().check(config, deadline.remaining())
        if not result.up:
            raise StepFailed(result.cause, result.message, words=result.message)
        partitions = int(result.identity.get("partitions", 0))
        self.facts["partitions"] = partitions
        return Passed(f"lookup of {topic}: {partitions} partition(s) (pulsar-client get_topic_partitions)",
                      data={"topic": topic, "partitions": partitions})

    def identity(self) -> str:
        partitions = self.facts.get("partitions", 0)
        return f"{self.facts.get('version', 'Pulsar')}, topic {self.facts.get('topic')} with {partitions} " \
               f"partition{'s' if partitions != 1 else ''}"
