"""RabbitMQ as the settings model sees it: fields, the cluster's addresses and its rules (the driver is
rabbitmq.py)."""
from __future__ import annotations

from .spec import (
    RUNTIME,
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


SPEC = RabbitmqSpec()
