"""Parsing of field values from forms, JSON and environment variables, one rule per field kind.

Every parser takes the raw input and returns the typed value or raises `Invalid` with a message
written for the person who typed it.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .schema import Field

TRUE = {"true", "1", "yes", "on"}
FALSE = {"false", "0", "no", "off", ""}
HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
MAX_TEXT = 255
MAX_SECRET = 4096


class Invalid(ValueError):
    """A value that does not fit its field; the message says why and what would."""


def parse_bool(raw: Any) -> bool:
    """true/false, yes/no, on/off, 1/0."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise Invalid(f"'{raw}' is not true or false.")


def parse_host(raw: Any) -> str:
    """A host name (RFC 1123, underscores allowed) or an IPv4/IPv6 address."""
    if not isinstance(raw, str):
        raise Invalid("Enter a host name or an IP address.")
    text = raw.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if not text:
        raise Invalid("Enter a host name or an IP address.")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if ":" in text or "/" in text:
        raise Invalid(f"'{raw}' is not a host name: give the host alone, without port or scheme.")
    if len(text) > 253 or not all(HOST_LABEL.match(label) for label in text.rstrip(".").split(".")):
        raise Invalid(f"'{raw}' is not a valid host name (letters, digits, '-' and '.' only).")
    if re.fullmatch(r"[0-9.]+", text):
        raise Invalid(f"'{raw}' is not a valid IPv4 address.")
    return text.rstrip(".").lower()


def parse_int(raw: Any, minimum: int | None = None, maximum: int | None = None,
              what: str = "a whole number") -> int:
    """A whole number within [minimum, maximum]."""
    if isinstance(raw, bool):
        raise Invalid(f"Enter {what}.")
    if isinstance(raw, int):
        value = raw
    else:
        text = str(raw).strip()
        if not re.fullmatch(r"[+-]?\d{1,10}", text):
            raise Invalid(f"'{raw}' is not {what}." if text else f"Enter {what}.")
        value = int(text)
    if minimum is not None and maximum is not None and not minimum <= value <= maximum:
        raise Invalid(f"{value} is outside {minimum}–{maximum}.")
    if minimum is not None and value < minimum:
        raise Invalid(f"{value} is below {minimum}.")
    if maximum is not None and value > maximum:
        raise Invalid(f"{value} is above {maximum}.")
    return value


def parse_port(raw: Any) -> int:
    """A TCP port, 1–65535."""
    return parse_int(raw, 1, 65535, what="a port number (1–65535)")


def split_host_port(item: str, default_port: int | None = None) -> tuple[str, int]:
    """'host:port', '[v6]:port' or (with a default port) 'host'."""
    item = item.strip()
    match = re.fullmatch(r"\[([^\]]+)\](?::(.*))?", item)
    if match:
        host, port = match.group(1), match.group(2)
    elif item.count(":") == 1:
        host, port = item.split(":")
    elif ":" in item:
        raise Invalid(f"'{item}': write an IPv6 address in brackets, e.g. [::1]:9092.")
    else:
        host, port = item, None
    if port is None or port == "":
        if default_port is None:
            raise Invalid(f"'{item}' needs a port, e.g. {item}:9092.")
        return parse_host(host), default_port
    return parse_host(host), parse_port(port)


def format_host_port(host: str, port: int) -> str:
    """host:port with IPv6 addresses bracketed."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_hostlist(raw: Any) -> str | None:
    """A comma-separated host:port list, normalised; empty means unset."""
    if raw is None:
        return None
    if isinstance(raw, list):
        raw = ",".join(str(x) for x in raw)
    text = str(raw).strip()
    if not text:
        return None
    items = [x for x in (p.strip() for p in text.split(",")) if x]
    if not items:
        raise Invalid("Enter host:port pairs separated by commas.")
    out = []
    for item in items:
        try:
            out.append(format_host_port(*split_host_port(item)))
        except Invalid as exc:
            raise Invalid(f"{exc}") from None
    return ",".join(out)


NATS_SCHEMES = ("nats", "tls")


def split_url(text: str, problem: str) -> Any:
    """urlsplit(text), or Invalid(`problem`) for what urllib refuses to split (an unclosed IPv6
    bracket: "ValueError: Invalid IPv6 URL")."""
    try:
        return urlsplit(text)
    except ValueError:
        raise Invalid(problem) from None


def _nats_server(item: str) -> tuple[str, str, int, Any]:
    """(scheme or "", host, port, urlsplit parts) of one NATS server: host[:port] or a nats:// / tls:// URL."""
    scheme = ""
    text = item.strip()
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme not in NATS_SCHEMES:
            raise Invalid(f"'{item}' is not a NATS server: use host:4222, nats://host:4222 or tls://host:4222.")
    parts = split_url(text if scheme else f"nats://{text}",
                      f"'{item}' is not a NATS server: use host:4222, nats://host:4222 or tls://host:4222.")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise Invalid(f"'{item}' is not a NATS server: use host:4222, nats://host:4222 or tls://host:4222.")
    try:
        port = parse_port(parts.port or 4222)
    except ValueError as exc:
        raise Invalid(f"'{item}': bad port.") from exc
    return scheme, parse_host(parts.hostname or ""), port, parts


def parse_nats_servers(raw: Any) -> str | None:
    """NATS servers: a comma list of host[:port] or nats:// / tls:// URLs (port 4222 by default),
    normalised; credentials belong in username/password/token, not here; empty means unset."""
    if raw is None:
        return None
    if isinstance(raw, list):
        raw = ",".join(str(x) for x in raw)
    items = [x.strip() for x in str(raw).split(",") if x.strip()]
    if not items:
        return None
    out = []
    for item in items:
        scheme, host, port, parts = _nats_server(item)
        if parts.username or parts.password:
            raise Invalid(f"'{item.split('@')[-1]}': put credentials in username and password (or token), "
                          "not in the server list.")
        out.append(f"{scheme}://{format_host_port(host, port)}" if scheme else format_host_port(host, port))
    return ",".join(out)


def nats_server_addresses(servers: str) -> tuple[tuple[str, int], ...]:
    """(host, port) of every server of a normalised NATS server list."""
    return tuple(_nats_server(item)[1:3] for item in servers.split(",") if item.strip())


def parse_pulsar_url(raw: Any) -> str | None:
    """pulsar://host:port[,host:port] or pulsar+ssl://…; empty means unset."""
    if raw is None:
        return None
    text = str(raw).strip()
    if not text:
        return None
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in ("pulsar", "pulsar+ssl"):
        raise Invalid(f"'{text}' is not a Pulsar URL: use pulsar://host:6650 or "
                      "pulsar+ssl://host:6651.")
    rest = rest.rstrip("/")
    if not rest or "/" in rest or "@" in rest:
        raise Invalid(f"'{text}' is not a Pulsar URL: use pulsar://host:6650 or "
                      "pulsar+ssl://host:6651.")
    default = 6651 if scheme == "pulsar+ssl" else 6650
    hosts = [format_host_port(*split_host_port(x, default)) for x in rest.split(",") if x.strip()]
    return f"{scheme}://{','.join(hosts)}"


def parse_text(raw: Any, limit: int = MAX_TEXT) -> str:
    """Plain text on one line."""
    if raw is None:
        return ""
    if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
        raise Invalid("Enter text.")
    text = str(raw).strip()
    if len(text) > limit:
        raise Invalid(f"At most {limit} characters.")
    if any(ord(c) < 32 for c in text):
        raise Invalid("Line breaks and control characters are not allowed.")
    return text


def parse_value(f: Field, raw: Any) -> Any:
    """Parse `raw` for field `f`; raises Invalid."""
    if f.kind == "bool":
        return parse_bool(raw)
    if f.kind == "host":
        return parse_host(raw)
    if f.kind == "port":
        return parse_port(raw)
    if f.kind == "int":
        return parse_int(raw, f.minimum, f.maximum)
    if f.kind == "choice":
        text = "" if raw is None else str(raw).strip()
        value: Any = text
        if f.integer and not isinstance(raw, bool) and re.fullmatch(r"[+-]?\d{1,6}", text):
            value = int(text)                    # an integer setting: 1 and "1" are the integer 1
        if value not in f.choices or isinstance(raw, bool) or isinstance(raw, float):
            shown = ", ".join(str(c) if c != "" else "(empty)" for c in f.choices)
            raise Invalid(f"'{text}' is not one of: {shown}.")
        return value
    if f.kind == "hostlist":
        return parse_hostlist(raw)
    if f.kind == "url":
        return parse_pulsar_url(raw)
    if f.kind == "serverlist":
        return parse_nats_servers(raw)
    if f.kind == "secret":
        if not isinstance(raw, str) or not raw:
            raise Invalid("Enter a value, or clear the field instead.")
        if len(raw) > MAX_SECRET:
            raise Invalid(f"At most {MAX_SECRET} characters.")
        return raw
    if f.kind == "str":
        return parse_text(raw)
    raise Invalid("This field cannot be set this way.")


def parse_nats_url(url: str) -> dict[str, Any]:
    """NATS_SERVER_URL (a comma list of URLs) → host, port, tls and credentials of the first URL, and
    `servers` (every URL, credentials left out) when it lists more than one."""
    items = [x.strip() for x in url.split(",") if x.strip()]
    if not items:
        raise Invalid(f"'{url}' is not a NATS URL (nats://host:4222 or tls://host:4222).")
    found = []
    for item in items:
        try:
            found.append(_nats_server(item if "://" in item else "nats://" + item))
        except Invalid:
            raise Invalid(f"'{url}' is not a NATS URL (nats://host:4222 or tls://host:4222).") from None
    _, host, port, _ = found[0]
    out: dict[str, Any] = {"host": host, "port": port}
    if any(scheme == "tls" for scheme, *_ in found):
        out["tls"] = True
    with_login = next((parts for *_, parts in found if parts.username), None)
    if with_login is not None and with_login.password is not None:
        out["username"] = unquote(with_login.username)
        out["password"] = unquote(with_login.password)
    elif with_login is not None:
        out["token"] = unquote(with_login.username)
    if len(found) > 1:
        out["servers"] = ",".join(f"{scheme}://{format_host_port(h, p)}" for scheme, h, p, _ in found)
    return out


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
