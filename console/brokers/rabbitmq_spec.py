"""RabbitMQ as the settings model sees it: fields, the cluster's addresses, RABBIT_SERVER_URL (an AMQP URI
and its query parameters) and its rules (the driver is rabbitmq.py)."""
from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote

from .spec import (
    RUNTIME,
    Field,
    Finding,
    Pitfall,
    ProtocolSpec,
    Settings,
    common,
    connect_timeout,
    install,
    login,
    login_pair,
    tls,
)
from .values import Invalid, parse_host, parse_int, parse_port, split_url

PREFETCH_LIMIT = 250


def parse_amqp_url(url: str) -> dict[str, Any]:
    """RABBIT_SERVER_URL (amqp://user:pass@host:port/vhost) → host, port, tls, credentials, vhost."""
    parts = split_url(url.strip(), f"'{url}' is not an AMQP URL (amqp://user:pass@host:5672/vhost).")
    if parts.scheme not in ("amqp", "amqps"):
        raise Invalid(f"'{url}' is not an AMQP URL (amqp://user:pass@host:5672/vhost).")
    tls = parts.scheme == "amqps"
    out: dict[str, Any] = {"host": parse_host(parts.hostname or ""), "tls": tls}
    try:
        out["port"] = parse_port(parts.port or (5671 if tls else 5672))
    except ValueError as exc:
        raise Invalid(f"'{url}': bad port.") from exc
    if parts.username:
        out["username"] = unquote(parts.username)
    if parts.password is not None:
        out["password"] = unquote(parts.password)
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    out["vhost"] = unquote(path) if path else "/"
    return out


AMQP_TLS_FILES = {"cacertfile": "tls_ca", "certfile": "tls_cert", "keyfile": "tls_key"}
AMQP_IGNORED = {
    "channel_max": "the console opens one channel per check",
    "frame_max": "the client library negotiates the frame size",
    "auth_mechanism": "the console logs in with username and password (PLAIN)",
    "fail_if_no_peer_cert": "it is a server-side option",
    "connection_attempts": "the console tries once per check",
    "retry_delay": "the console tries once per check",
    "socket_timeout": "connect_timeout bounds every wait",
    "locale": "the console uses the broker's default",
}


def parse_amqp_query(url: str) -> tuple[dict[str, Any], list[str]]:
    """The query parameters of an AMQP URI (RabbitMQ's URI query parameters) as fields — `heartbeat`
    (s), `connection_timeout` (ms, rounded up to whole seconds of connect_timeout), `cacertfile`,
    `certfile`, `keyfile` (PEM paths) — and a note for every parameter that is not applied."""
    out: dict[str, Any] = {}
    notes: list[str] = []
    query = split_url(url.strip(), f"'{url}' is not an AMQP URL (amqp://user:pass@host:5672/vhost).").query
    for name, value in parse_qsl(query, keep_blank_values=True):
        key = name.lower()
        try:
            if key == "heartbeat":
                out["heartbeat"] = parse_int(value, 0, 3600)
            elif key == "connection_timeout":
                millis = parse_int(value, 1, 300_000)
                out["connect_timeout"] = max(1, -(-millis // 1000))
            elif key in AMQP_TLS_FILES:
                if not value.strip():
                    raise Invalid("it needs a file path")
                out[AMQP_TLS_FILES[key]] = value.strip()
            elif key == "verify":
                if value not in ("verify_peer", "verify_none"):
                    raise Invalid("use verify_peer or verify_none")
                if value == "verify_none":
                    notes.append("RABBIT_SERVER_URL: verify=verify_none is not applied: the console always "
                                 "verifies the broker's certificate chain (tls_verify_hostname turns off only "
                                 "the host-name check).")
            elif key == "server_name_indication":
                notes.append(f"RABBIT_SERVER_URL: server_name_indication={value} is not applied: the console "
                             "sends the host name of the URL (tls_verify_hostname turns off its check).")
            elif key in AMQP_IGNORED:
                notes.append(f"RABBIT_SERVER_URL: {name}={value} is ignored: {AMQP_IGNORED[key]}.")
            else:
                notes.append(f"RABBIT_SERVER_URL: {name}={value} is ignored: it is not a query parameter the "
                             "console knows.")
        except Invalid as exc:
            notes.append(f"RABBIT_SERVER_URL: {name}={value} is ignored: {exc}")
    return out, notes


def rabbit_server_url(raw: str) -> tuple[dict[str, Any], list[str]]:
    """RABBIT_SERVER_URL: the fields of the URL and of its query, and a note for every part not applied."""
    fields = parse_amqp_url(raw)
    query, ignored = parse_amqp_query(raw)
    fields.update(query)
    return fields, ignored


class RabbitmqSpec(ProtocolSpec):
    name = "rabbitmq"
    label = "RabbitMQ"
    default_port = 5672
    tls_port = 5671
    driver = "console.brokers.rabbitmq:RabbitmqDriver"
    node_list = "addresses"
    aliases = {"RABBIT_SERVER_URL": rabbit_server_url}
    fields = (
        *common(5672),
        Field("addresses", "Addresses", "hostlist", None, **install("address"),
              help="Comma-separated host:port list of the cluster's nodes; wins over host and port when set."),
        Field("vhost", "Virtual host", "str", "/", **install("address")),
        *login("guest", "guest"),
        *tls(),
        Field("exchange", "Exchange", "str", "", **install("identity", "options"),
              help="Exchange the diagnostics declare passively (empty: the default exchange)."),
        Field("heartbeat", "Heartbeat (s)", "int", 60, minimum=0, maximum=3600, **RUNTIME),
        Field("prefetch", "Prefetch count", "int", 10, minimum=0, maximum=65535, **RUNTIME),
        connect_timeout(),
    )

    def rules(self, s: Settings) -> list[Finding]:
        return login_pair(s, password_required=True)

    def pitfalls(self, s: Settings) -> list[Pitfall]:
        out = []
        prefetch = int(s.get("prefetch") or 0)
        if prefetch == 0 or prefetch > PREFETCH_LIMIT:
            shown = "unlimited (0)" if prefetch == 0 else str(prefetch)
            out.append(Pitfall(self.name, "prefetch", "warning", f"Prefetch {shown}",
                               "A large prefetch piles unacknowledged messages on one consumer "
                               "(memory, unfair distribution, long redelivery after a crash).",
                               "Start around 10–50 and raise it only with measurements."))
        if int(s.get("heartbeat") or 0) == 0:
            out.append(Pitfall(self.name, "heartbeat", "warning", "Heartbeat off",
                               "Without heartbeats a half-open TCP connection (a dead peer, a NAT "
                               "timeout) is not noticed and consumers silently stop receiving.",
                               "Set a heartbeat of 30–60 seconds."))
        return out


SPEC = RabbitmqSpec()
