"""Broker connections of the example service, built from the settings the console delivers.

`open_connection(protocol, settings, name)` connects with the real client library (paho-mqtt for MQTT,
pika for RabbitMQ), proves the connection with one real round trip (publish a random payload on a private
topic or queue and receive it back) and returns a `Connection` that stays open; any failure raises
`ConnectFailed` with the broker's own reason ("Not authorized", "ACCESS_REFUSED - Login was refused …",
"certificate verify failed: certificate has expired"). TLS material arrives as PEM text and is written to
a private temporary directory (0700, files 0600) that lives as long as the connection.

Settings are the console's field names (console/settings/schema.py): `host`, `port`, `username`,
`password`, `tls`, `tls_ca`, `tls_cert`, `tls_key`, `tls_verify_hostname`, `connect_timeout`; MQTT
`client_id`, `protocol_version`, `keepalive`, `clean_session`, `qos`; RabbitMQ `nodes`, `vhost`,
`exchange`, `heartbeat`, `prefetch`.
"""
from __future__ import annotations

from typing import Any, Mapping

from .base import ConnectFailed, Connection, PemFiles
from .mqtt import MqttConnection
from .rabbitmq import RabbitmqConnection

__all__ = ["CONNECTIONS", "PROTOCOLS", "ConnectFailed", "Connection", "PemFiles", "open_connection"]

CONNECTIONS: dict[str, type[Connection]] = {"mqtt": MqttConnection, "rabbitmq": RabbitmqConnection}
PROTOCOLS = tuple(CONNECTIONS)


def open_connection(protocol: str, settings: Mapping[str, Any], name: str) -> Connection:
    """A connected, proven connection to the `protocol` broker; ConnectFailed with the broker's reason."""
    kind = CONNECTIONS.get(protocol)
    if kind is None:
        raise ConnectFailed(f"this service speaks {', '.join(PROTOCOLS)}, not {protocol}")
    try:
        connection = kind(settings, name)
    except (TypeError, ValueError) as exc:
        raise ConnectFailed(f"{settings.get('host') or 'localhost'}:{settings.get('port') or '-'}: "
                            f"the settings cannot be used: {exc}") from None
    try:
        connection.open()
    except ConnectFailed:
        connection.close()
        raise
    except Exception as exc:  # noqa: BLE001 - an unexpected library error still becomes a reason
        connection.close()
        raise ConnectFailed(f"{connection.broker}: {type(exc).__name__}: {exc}") from None
    return connection
