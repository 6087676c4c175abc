"""RabbitMQ as the settings model sees it: fields, the cluster's addresses and its rules (the driver is
rabbitmq.py)."""
from __future__ import annotations

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

PREFETCH_LIMIT = 250


class RabbitmqSpec(ProtocolSpec):
    name = "rabbitmq"
    label = "RabbitMQ"
    default_port = 5672
    tls_port = 5671
    driver = "console.brokers.rabbitmq:RabbitmqDriver"
    node_list = "addresses"
    aliases = {"RABBIT_SERVER_URL": "amqp_url"}
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
            out.append(Pitfall("rabbitmq", "prefetch", "warning", f"Prefetch {shown}",
                               "A large prefetch piles unacknowledged messages on one consumer "
                               "(memory, unfair distribution, long redelivery after a crash).",
                               "Start around 10–50 and raise it only with measurements."))
        if int(s.get("heartbeat") or 0) == 0:
            out.append(Pitfall("rabbitmq", "heartbeat", "warning", "Heartbeat off",
                               "Without heartbeats a half-open TCP connection (a dead peer, a NAT "
                               "timeout) is not noticed and consumers silently stop receiving.",
                               "Set a heartbeat of 30–60 seconds."))
        return out


SPEC = RabbitmqSpec()
