"""Pulsar driver (pulsar-client).

Check: connect, one partitioned-metadata lookup of a topic, close. Diagnosis: the handshake is a raw
CONNECT answered by CONNECTED (or by an ERROR, which still proves the port speaks Pulsar); the login is a
raw CONNECT carrying the configured token or basic credentials (OAuth2 tokens are fetched by the client
library, so they are checked with the operation); the operation is the check's own lookup of the
configured topic's partitions. The service URL decides TLS: `pulsar+ssl://` means TLS, whatever the
`tls` flag says. One map (`ERROR_CAUSES`) names the broker's errors for both.

Connection string: `config.url` when it is `pulsar://host:port` or `pulsar+ssl://host:port`, else built
from `host`/`port` and `tls` (`tls` on with a `pulsar://` URL switches it to `pulsar+ssl://`).

Options honoured: `tls`, `tls_ca_file` (else the system CA bundle), `tls_cert_file`/`tls_key_file`,
`tls_verify_hostname` (`tls_validate_hostname`, which the library leaves off by default), `token`
(`AuthenticationToken`), `username`/`password` (`AuthenticationBasic`, when no token is set),
`options["oauth2_issuer_url"]`, `oauth2_client_id`, `oauth2_client_secret`, `oauth2_audience`
(`AuthenticationOauth2`, when no token is set), `options["topic"]` (default
`persistent://public/default/messaging-console-health`).

Identity: `service_url`, `topic`, `partitions`, `tls`.

Traps handled:
- the first `Client(logger=...)` of a process fixes the library's logger for the whole process: every
  client gets the same module-level logger, whose handler hands each line to the checks running now (and
  to the `console.brokers.pulsar` logger at DEBUG). That logger is created outside the logging registry,
  so an application's `logging.config.dictConfig` cannot strip its handler;
- a refused port raises `Timeout` only after `operation_timeout_seconds` (an int, at least 1 s) because
  the client retries: the lookup runs with `get_topic_partitions_async` and the check waits on its own
  deadline; the first warning, error or lost connection the library logs triggers one transport diagnosis
  (`net.diagnose`), which ends the check as soon as it names a transport cause (refused, TLS, plaintext
  vs TLS, another protocol);
- a refused token (or basic login) is also only a `Timeout` to the C++ client, which closes and retries on
  any answer but CONNECTED (apache/pulsar-client-cpp#53): after the transport diagnosis, and on a
  `Timeout`, one raw CONNECT with the configured credentials (`login_refusal`) names it `auth_failed`;
- CA, expiry and host-name failures all log "certificate verify failed": a Python handshake with the same
  settings names the exact cause;
- the client is always closed (asynchronously; `shutdown()` before that close completes would block for
  0.5 s, so the close gets up to 0.1 s even past the deadline; it takes ~1 ms), shut down and released
  at once, so that no C++ client outlives the check; its io thread still finishes the teardown a few ms
  later, and an interpreter exiting inside that window aborts in C++ ("terminate called without an
  active exception", seen with the bare library too), so an `atexit` hook waits until 0.3 s after the
  last close (only when a check just ran, e.g. `flask brokers check pulsar`).
"""
from __future__ import annotations

import atexit
import json
import logging
import threading
import time
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import pulsar

from .base import (
    BrokerConfig,
    CheckFailed,
    Deadline,
    Driver,
    Greeting,
    Link,
    Passed,
    StepFailed,
    Wire,
    frame_complete,
    one_line,
)
from .net import connect, diagnose, read_answer, ssl_context, system_ca_file, tls_failure, upgrade
from .pulsar_spec import SPEC

_CLOSE_GRACE = 0.1
DEFAULT_TOPIC = "persistent://public/default/messaging-console-health"
_CONNECT = b"\x08\x02\x12\x06\x0a\x02mc\x20\x0f"
PULSAR_GREETING = Greeting("Pulsar", (len(_CONNECT) + 4).to_bytes(4, "big") + len(_CONNECT).to_bytes(4, "big")
                           + _CONNECT, lambda reply: len(reply) >= 10 and reply[8:9] == b"\x08")

ERROR_CAUSES = {"AuthenticationError": "auth_failed", "AuthorizationError": "access_denied",
                "TopicNotFound": "not_found", "InvalidTopicName": "not_found"}
_TROUBLE = ("disconnected", "Reschedule", "closed", "failed", "Failed", "error", "Error")


class _Watch:
    """The library log lines seen while one check runs."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.trouble = threading.Event()


class _Fanout(logging.Handler):
    """Hands every pulsar-client log line to the checks running now."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.watches: set[_Watch] = set()
        self.guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        _FORWARD.debug("%s", line)
        with self.guard:
            watches = list(self.watches)
        trouble = record.levelno >= logging.WARNING or any(word in line for word in _TROUBLE)
        for watch in watches:
            watch.lines.append(line)
            if trouble:
                watch.trouble.set()


_EXIT_SETTLE = 0.3
_last_close = [0.0]


def _settle_before_exit() -> None:
    """pulsar-client tears a closed client down asynchronously; an interpreter that exits within that
    window can abort in C++ ("terminate called without an active exception"): wait it out."""
    time.sleep(max(0.0, _last_close[0] + _EXIT_SETTLE - time.monotonic()))


atexit.register(_settle_before_exit)
_FORWARD = logging.getLogger(__name__)
_FANOUT = _Fanout()
LOGGER = logging.Logger("console.brokers.pulsar.client", logging.INFO)
LOGGER.addHandler(_FANOUT)


def service_url(config: BrokerConfig) -> str:
    """The service URL for `config`: its `url` when it is a pulsar one, else built from host and port."""
    url = (config.url or "").strip()
    if url.startswith(("pulsar://", "pulsar+ssl://")):
        if config.tls and url.startswith("pulsar://"):
            return "pulsar+ssl://" + url.removeprefix("pulsar://")
        return url
    host = f"[{config.host}]" if ":" in config.host else config.host
    return f"{'pulsar+ssl' if config.tls else 'pulsar'}://{host}:{config.port}"


def service_hosts(url: str) -> tuple[tuple[str, int], ...]:
    """Every (host, port) of a pulsar service URL (`pulsar://h1:6650,h2:6650`), default ports filled in."""
    scheme, _, rest = url.partition("://")
    default = 6651 if scheme == "pulsar+ssl" else 6650
    hosts = []
    for item in rest.split("/", 1)[0].split(","):
        parts = urlsplit(f"//{item.strip()}")
        hosts.append((parts.hostname or item.strip(), parts.port or default))
    return tuple(hosts)


def _authentication(config: BrokerConfig) -> Any:
    if config.token:
        return pulsar.AuthenticationToken(config.token)
    options = config.options
    if options.get("oauth2_issuer_url"):
        params = {"type": "client_credentials", "issuer_url": options["oauth2_issuer_url"],
                  "client_id": options.get("oauth2_client_id") or "",
                  "client_secret": options.get("oauth2_client_secret") or ""}
        if options.get("oauth2_audience"):
            params["audience"] = options["oauth2_audience"]
        return pulsar.AuthenticationOauth2(json.dumps(params))
    if config.username:
        return pulsar.AuthenticationBasic(config.username, config.password or "")
    return None


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
    kind = int(top.get(1, 0))
    body = top.get(kind)
    return kind, _fields(body) if isinstance(body, bytes) else {}


def _text(value: int | bytes | None) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


def login_refusal(config: BrokerConfig, deadline: Deadline) -> CheckFailed | None:
    """The broker's refusal of the configured login, seen with one raw CONNECT (the token or basic
    credentials, else anonymous): the C++ client closes and retries on any answer but CONNECTED, so it
    reports a refused token only as a timeout. None when the broker accepts it or says nothing useful."""
    if config.token:
        method, payload = "token", connect_frame("token", config.token.encode())
    elif config.username:
        method, payload = "basic", connect_frame("basic", f"{config.username}:{config.password or ''}".encode())
    else:
        method, payload = "anonymous", PULSAR_GREETING.payload
    where = f"{config.host}:{config.port}"
    sock = None
    try:
        sock = connect(config.host, config.port, deadline.remaining())
        if config.tls:
            sock = upgrade(sock, ssl_context(config), config.host, deadline.remaining())
        sock.sendall(payload)
        reply = read_answer(sock, deadline.remaining(), frame_complete(4))
    except (OSError, ValueError, CheckFailed):
        return None
    finally:
        if sock is not None:
            sock.close()
    if not reply:
        return None
    kind, body = parse_command(reply)
    if kind != _ERROR:
        return None
    error = _SERVER_ERRORS.get(int(body.get(2, 0)), str(body.get(2)))
    cause = ERROR_CAUSES.get(error)
    if cause not in ("auth_failed", "access_denied"):
        return None
    words = _text(body.get(3)) or error
    return CheckFailed(cause, f"{where}: the broker refused the {method} CONNECT: {error}: {words} (the client "
                              f"library reports this only as a timeout)")


class PulsarDriver(Driver):
    """Pulsar with pulsar-client: a topic lookup for the check; CONNECT, CONNECT with credentials and the
    same lookup for the diagnosis."""

    spec = SPEC
    address_field = "url (or host)"
    tls_by_address = False   # the C++ library verifies the address it connects to, not a name given apart
    tls_on = "use a pulsar+ssl:// service URL"
    tls_off = "use a pulsar:// service URL"
    texts = {
        "auth_failed": (
            "The Pulsar broker refused the authentication ({login}).{said}",
            "Check the token (not expired, signed with the broker's key, its subject known to the broker) "
            "or the configured OAuth2 / basic credentials."),
        "access_denied": (
            "The Pulsar broker refused the lookup of {topic} for {login}.{said}",
            "Grant the role permissions on the namespace (pulsar-admin namespaces grant-permission "
            "<tenant>/<namespace> --role <role> --actions produce,consume)."),
        "not_found": (
            "The topic {topic} was not found.{said}",
            "Create it (pulsar-admin topics create {topic}), check its tenant and namespace, or correct the "
            "topic setting."),
    }

    def probe(self, config: BrokerConfig, deadline: Deadline) -> dict[str, Any]:
        """Look up the topic's partitions within `deadline`; the cluster's identity."""
        library = deadline.share(self.library_share)
        url = service_url(config)
        parts = urlsplit(url.split(",")[0])
        tls = url.startswith("pulsar+ssl://")
        host, port = parts.hostname or config.host, parts.port or config.port
        effective = replace(config, tls=tls, host=host, port=port)
        topic = str(config.options.get("topic") or DEFAULT_TOPIC)
        watch = _Watch()
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def on_result(result: Any, partitions: Any) -> None:
            outcome["result"], outcome["partitions"] = result, list(partitions or ())
            done.set()
            watch.trouble.set()

        with _FANOUT.guard:
            _FANOUT.watches.add(watch)
        client = None
        try:
            client = pulsar.Client(url, **self._client_kwargs(config, effective, library))
            client._client.get_topic_partitions_async(topic, on_result)
            verdict = self._wait(effective, deadline, library, watch, done)
            if verdict is not None:
                raise verdict
            if "result" not in outcome:
                fallback = CheckFailed("handshake_timeout",
                                       f"{host}:{port}: no lookup answer within the timeout")
                raise diagnose(effective, host, port, deadline, PULSAR_GREETING, fallback)
            result = outcome["result"]
            if result == pulsar.Result.Ok:
                deadline.done()
                return {"service_url": url, "topic": topic, "partitions": len(outcome["partitions"]),
                        "tls": tls}
            raise self._classify(effective, deadline, result, watch)
        finally:
            with _FANOUT.guard:
                _FANOUT.watches.discard(watch)
            if client is not None:
                self._close(client, deadline)

    def uses_target(self, config: BrokerConfig) -> bool:
        """The probe already looks up the configured topic (the diagnosis's operation step is the check)."""
        return False

    @staticmethod
    def _client_kwargs(config: BrokerConfig, effective: BrokerConfig, library: Deadline) -> dict[str, Any]:
        budget = library.remaining()
        kwargs: dict[str, Any] = {
            "authentication": _authentication(config), "logger": LOGGER,
            "operation_timeout_seconds": max(1, int(budget)),
            "connection_timeout_ms": max(int(budget * 1000), 1), "io_threads": 1,
            "message_listener_threads": 1, "stats_interval_in_seconds": 3600,
        }
        if effective.tls:
            kwargs["tls_trust_certs_file_path"] = config.tls_ca_file or system_ca_file()
            kwargs["tls_validate_hostname"] = config.tls_verify_hostname
            if config.tls_cert_file:
                kwargs["tls_certificate_file_path"] = config.tls_cert_file
                kwargs["tls_private_key_file_path"] = config.tls_key_file or config.tls_cert_file
        return kwargs

    @staticmethod
    def _wait(config: BrokerConfig, deadline: Deadline, library: Deadline, watch: _Watch,
              done: threading.Event) -> CheckFailed | None:
        diagnosed = False
        while not done.is_set() and not library.expired:
            watch.trouble.wait(library.remaining())
            if done.is_set() or diagnosed or not watch.trouble.is_set():
                continue
            diagnosed = True
            lines = " ".join(watch.lines[-3:]).lower()
            if "certificate verify failed" in lines:
                return tls_failure(config, config.host, config.port, deadline,
                                   f"{config.host}:{config.port}: certificate verify failed")
            keep = CheckFailed("unknown", "")
            found = diagnose(config, config.host, config.port, deadline, PULSAR_GREETING, keep)
            if found is not keep:
                return found
            refused = login_refusal(config, deadline)
            if refused is not None:
                return refused
        return None

    @staticmethod
    def _classify(config: BrokerConfig, deadline: Deadline, result: Any, watch: _Watch) -> CheckFailed:
        where = f"{config.host}:{config.port}"
        name = getattr(result, "name", str(result))
        words = f"{where}: lookup failed: {name}"
        errors = [line for line in watch.lines if "error" in line.lower() or "fail" in line.lower()]
        if errors:
            words += f" ({one_line(errors[-1], 160)})"
        if name in ERROR_CAUSES:
            return CheckFailed(ERROR_CAUSES[name], words)
        if "certificate verify failed" in " ".join(watch.lines).lower():
            return tls_failure(config, config.host, config.port, deadline, words)
        if name not in ("Timeout", "ConnectError"):
            return diagnose(config, config.host, config.port, deadline, PULSAR_GREETING,
                            CheckFailed("unknown", words))
        # the transport first: a raw CONNECT to a host that drops the SYN would spend what is left
        fallback = CheckFailed("handshake_timeout", words)
        found = diagnose(config, config.host, config.port, deadline, PULSAR_GREETING, fallback)
        if found is not fallback:
            return found
        return login_refusal(config, deadline) or fallback

    @staticmethod
    def _close(client: pulsar.Client, deadline: Deadline) -> None:
        closed = threading.Event()
        try:
            client._client.close_async(lambda _result: closed.set())
            closed.wait(max(deadline.remaining(), _CLOSE_GRACE))
        except Exception:  # noqa: BLE001 - best-effort clean-up
            pass
        try:
            client._client.shutdown()
        except Exception:  # noqa: BLE001
            pass
        client._client = None
        _last_close[0] = time.monotonic()

    # -- the diagnosis ---------------------------------------------------------------------------------

    @staticmethod
    def effective(config: BrokerConfig) -> BrokerConfig:
        url = service_url(config)
        tls = url.startswith("pulsar+ssl://")
        hosts = service_hosts(url)
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
            error = _SERVER_ERRORS.get(int(body.get(2, 0)), str(body.get(2)))
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
        error = _SERVER_ERRORS.get(int(body.get(2, 0)), str(body.get(2)))
        words = _text(body.get(3)) or error
        cause = "access_denied" if ERROR_CAUSES.get(error) == "access_denied" else "auth_failed"
        raise StepFailed(cause, f"{error}: {words}", words=words)

    def operation(self, deadline: Deadline, link: Link) -> Passed:
        topic = str(self.config.options.get("topic") or DEFAULT_TOPIC)
        self.facts["topic"] = topic
        config = replace(self.config, options={**self.config.options, "topic": topic})
        result = self.check(config, deadline.remaining())
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
