"""NATS as the settings model sees it: fields, the server list (nats:// and tls:// URLs) and how it and
NATS_SERVER_URL are parsed, and its rules (the driver is nats.py)."""
from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from .spec import (
    RUNTIME,
    SECURITY,
    Field,
    Finding,
    ProtocolSpec,
    Settings,
    common,
    connect_timeout,
    install,
    login,
    login_pair,
    tls,
)
from .values import Invalid, format_host_port, parse_host, parse_port, split_url

NATS_SCHEMES = ("nats", "tls")


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


class NatsSpec(ProtocolSpec):
    name = "nats"
    label = "NATS"
    default_port = 4222
    driver = "console.brokers.nats:NatsDriver"
    node_list = "servers"
    client_name = "name"
    aliases = {"NATS_SERVER_URL": lambda raw: (parse_nats_url(raw), [])}
    fields = (
        *common(4222),
        Field("servers", "Servers", "serverlist", None, **install("address"), parse=parse_nats_servers,
              help="Comma-separated host:port list or nats:// / tls:// URLs (port 4222 by default); wins "
                   "over host and port when set."),
        *login(),
        Field("token", "Token", "secret", None, **SECURITY),
        *tls(),
        Field("name", "Connection name", "str", "messaging-console", **RUNTIME),
        Field("ping_interval", "Ping interval (s)", "int", 120, minimum=1, maximum=3600, **RUNTIME),
        connect_timeout(),
    )

    def nodes(self, value: str) -> tuple[tuple[str, int], ...]:
        return nats_server_addresses(value)

    def uses_tls(self, s: Settings) -> bool:
        return "tls://" in (s.get("servers") or "") or bool(s.get("tls"))

    def rules(self, s: Settings) -> list[Finding]:
        out = login_pair(s, password_required=True)
        if s.fields["token"].is_set and s.get("username"):
            out.append(Finding(("token", "username"), "token",
                               "Use either a token or a username and password, not both."))
        return out


SPEC = NatsSpec()
