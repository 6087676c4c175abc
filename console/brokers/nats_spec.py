"""NATS as the settings model sees it: fields, the server list (nats:// and tls:// URLs) and its rules
(the driver is nats.py)."""
from __future__ import annotations

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
    parse_node,
    tls,
)


class NatsSpec(ProtocolSpec):
    name = "nats"
    label = "NATS"
    default_port = 4222
    driver = "console.brokers.nats:NatsDriver"
    node_list = "servers"
    client_name = "name"
    aliases = {"NATS_SERVER_URL": "nats_url"}
    fields = (
        *common(4222),
        Field("servers", "Servers", "serverlist", None, **install("address"),
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
        # the model normalises the list: host:port or nats:// / tls:// URLs, every port written out
        return tuple(parse_node(item.strip().split("://")[-1]) for item in value.split(",") if item.strip())

    def uses_tls(self, s: Settings) -> bool:
        return "tls://" in (s.get("servers") or "") or bool(s.get("tls"))

    def rules(self, s: Settings) -> list[Finding]:
        out = login_pair(s, password_required=True)
        if s.fields["token"].is_set and s.get("username"):
            out.append(Finding(("token", "username"), "token",
                               "Use either a token or a username and password, not both."))
        return out


SPEC = NatsSpec()
