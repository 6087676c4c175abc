"""Parsing of field values, the rules every protocol's fields share: booleans, host names, ports, numbers,
host:port lists, text. Every parser takes the raw input and returns the typed value or raises `Invalid`
with a message written for the person who typed it. A protocol's own formats (a service URL, a server
list, an alias variable's URL) are parsed in its spec with these.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

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


def split_url(text: str, problem: str) -> Any:
    """urlsplit(text), or Invalid(`problem`) for what urllib refuses to split (an unclosed IPv6
    bracket: "ValueError: Invalid IPv6 URL")."""
    try:
        return urlsplit(text)
    except ValueError:
        raise Invalid(problem) from None


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
