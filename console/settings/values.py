"""Parsing of field values from forms, JSON and environment variables, one rule per field kind.

Every parser takes the raw input and returns the typed value or raises `Invalid` with a message
written for the person who typed it.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import unquote, urlsplit

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
        if text not in f.choices:
            shown = ", ".join(c or "(empty)" for c in f.choices)
            raise Invalid(f"'{text}' is not one of: {shown}.")
        return text
    if f.kind == "hostlist":
        return parse_hostlist(raw)
    if f.kind == "url":
        return parse_pulsar_url(raw)
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
    """NATS_SERVER_URL → host, port, tls and credentials (the first URL of a list)."""
    first = url.split(",")[0].strip()
    if "://" not in first:
        first = "nats://" + first
    parts = urlsplit(first)
    if parts.scheme not in ("nats", "tls"):
        raise Invalid(f"'{url}' is not a NATS URL (nats://host:4222 or tls://host:4222).")
    out: dict[str, Any] = {"host": parse_host(parts.hostname or "")}
    try:
        out["port"] = parse_port(parts.port or 4222)
    except ValueError as exc:
        raise Invalid(f"'{url}': bad port.") from exc
    if parts.scheme == "tls":
        out["tls"] = True
    if parts.username and parts.password is not None:
        out["username"] = unquote(parts.username)
        out["password"] = unquote(parts.password)
    elif parts.username:
        out["token"] = unquote(parts.username)
    return out


def parse_amqp_url(url: str) -> dict[str, Any]:
    """RABBIT_SERVER_URL (amqp://user:pass@host:port/vhost) → host, port, tls, credentials, vhost."""
    parts = urlsplit(url.strip())
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
