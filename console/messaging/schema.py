"""The messaging settings schema: every field of every protocol, declared once.

The page's forms, the JSON API, the OpenAPI document, environment overrides, validation, masking and
(later) the audit log all learn from these declarations which fields exist, their types, defaults,
whether they are secret, and whether a change is installation-time or runtime.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..brokers import PROTOCOLS

PROTOCOL_LABELS = {
    "kafka": "Kafka",
    "pulsar": "Pulsar",
    "mqtt": "MQTT",
    "nats": "NATS",
    "rabbitmq": "RabbitMQ",
}
DEFAULT_PORTS = {"kafka": 9092, "pulsar": 6650, "mqtt": 1883, "nats": 4222, "rabbitmq": 5672}
TLS_PORTS = {"kafka": 9093, "pulsar": 6651, "mqtt": 8883, "nats": 4222, "rabbitmq": 5671}

INSTALL_REASONS = {
    "enabled": "Adapters are created on the protocols that are enabled; disabling one strands them.",
    "address": "Adapters get the broker address copied into them when they are created.",
    "security": "Adapters are created with the TLS and login settings of that moment.",
    "identity": "Consumers keep the identity they were created with; a new one starts over.",
}
RUNTIME_REASONS = {
    "tuning": "Read at every connection; takes effect on the next connect.",
}


@dataclass(frozen=True)
class Field:
    """One setting of one protocol."""

    name: str
    label: str
    kind: str                       # bool str host port int choice hostlist serverlist url secret file
    default: Any = None
    group: str = "connection"       # connection | security | options
    install_time: bool = True
    reason: str = ""
    help: str = ""
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    env_suffix: str | None = None   # SP_<P>_<suffix>; defaults to the upper-cased name

    @property
    def secret(self) -> bool:
        return self.kind == "secret" or self.name == "tls_key"

    @property
    def is_file(self) -> bool:
        return self.kind == "file"

    def env_var(self, protocol: str) -> str:
        return f"SP_{protocol.upper()}_{self.env_suffix or self.name.upper()}"

    @property
    def change_kind(self) -> str:
        return "installation-time" if self.install_time else "runtime"


def _install(kind: str) -> dict[str, Any]:
    return {"install_time": True, "reason": INSTALL_REASONS[kind]}


_RUNTIME: dict[str, Any] = {"install_time": False, "reason": RUNTIME_REASONS["tuning"], "group": "options"}


def _common(protocol: str, *, address: bool = True) -> list[Field]:
    fields = [
        Field("enabled", "Enabled", "bool", False, **_install("enabled"),
              help="Offer this protocol to adapters and check its broker."),
    ]
    if address:
        fields += [
            Field("host", "Host", "host", "localhost", **_install("address"),
                  help="Broker host name or IP address."),
            Field("port", "Port", "port", DEFAULT_PORTS[protocol], minimum=1, maximum=65535,
                  **_install("address")),
        ]
    return fields


def _tls() -> list[Field]:
    sec: dict[str, Any] = {**_install("security"), "group": "security"}
    return [
        Field("tls", "TLS", "bool", False, **sec, help="Encrypt the connection with TLS."),
        Field("tls_ca", "CA truststore", "file", None, **sec, env_suffix="TLS_CA_FILE",
              help="PEM, PKCS#12 or JKS with the CA(s) that signed the broker certificate. "
                   "Without one the system CA store is used."),
        Field("tls_cert", "Client certificate", "file", None, **sec, env_suffix="TLS_CERT_FILE",
              help="For brokers that require client certificates (mutual TLS): PEM with its key, "
                   "PKCS#12 or JKS."),
        Field("tls_key", "Client key", "file", None, **sec, env_suffix="TLS_KEY_FILE",
              help="The private key of the client certificate; uploaded with it."),
        Field("tls_verify_hostname", "Verify host name", "bool", True, **sec,
              help="Check that the broker certificate names the host connected to."),
    ]


def _login(default_user: str | None = None, default_password: str | None = None) -> list[Field]:
    sec: dict[str, Any] = {**_install("security"), "group": "security"}
    return [
        Field("username", "Username", "str", default_user, **sec),
        Field("password", "Password", "secret", default_password, **sec),
    ]


def _timeout(default: int = 10) -> Field:
    return Field("connect_timeout", "Connect timeout (s)", "int", default, minimum=1, maximum=300,
                 **_RUNTIME, help="How long a client waits for the broker to answer.")


def _kafka() -> list[Field]:
    sec: dict[str, Any] = {**_install("security"), "group": "security"}
    opt: dict[str, Any] = {**_install("identity"), "group": "options"}
    return [
        *_common("kafka"),
        Field("bootstrap_servers", "Bootstrap servers", "hostlist", None, **_install("address"),
              help="Comma-separated host:port list; wins over host and port when set."),
        Field("security_protocol", "Security protocol", "choice", "",
              choices=("", "PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"), **sec,
              help="Empty: derived from TLS and the SASL mechanism."),
        Field("sasl_mechanism", "SASL mechanism", "choice", "",
              choices=("", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"), **sec,
              help="Empty: no SASL login."),
        *_login(),
        *_tls(),
        Field("client_id", "Client id", "str", "messaging-console", **opt),
        Field("group_id", "Consumer group id", "str", "messaging-console", **opt),
        Field("auto_offset_reset", "Auto offset reset", "choice", "latest",
              choices=("earliest", "latest", "none"), **_RUNTIME,
              help="Where a consumer group without a committed offset starts."),
        Field("topic", "Topic", "str", "", **opt, help="Topic the diagnostics look up."),
        Field("session_timeout_ms", "Session timeout (ms)", "int", 45000, minimum=1000,
              maximum=3_600_000, **_RUNTIME),
        _timeout(),
    ]


def _pulsar() -> list[Field]:
    sec: dict[str, Any] = {**_install("security"), "group": "security"}
    opt: dict[str, Any] = {**_install("identity"), "group": "options"}
    return [
        *_common("pulsar"),
        Field("url", "Service URL", "url", None, **_install("address"),
              help="pulsar://host:port or pulsar+ssl://host:port, several hosts comma-separated "
                   "(pulsar://h1:6650,h2:6650); wins over host and port."),
        *_tls(),
        Field("token", "Token", "secret", None, **sec, help="JWT for token authentication."),
        Field("oauth2_issuer_url", "OAuth2 issuer URL", "str", "", **sec),
        Field("oauth2_client_id", "OAuth2 client id", "str", "", **sec),
        Field("oauth2_client_secret", "OAuth2 client secret", "secret", None, **sec),
        Field("oauth2_audience", "OAuth2 audience", "str", "", **sec),
        Field("topic", "Topic", "str", "persistent://public/default/messaging-console", **opt),
        Field("subscription_name", "Subscription name", "str", "messaging-console", **opt),
        Field("subscription_type", "Subscription type", "choice", "Shared",
              choices=("Exclusive", "Shared", "Failover", "Key_Shared"), **opt),
        Field("consumers", "Consumers per subscription", "int", 1, minimum=1, maximum=1000,
              **_RUNTIME),
        Field("operation_timeout", "Operation timeout (s)", "int", 30, minimum=1, maximum=600,
              **_RUNTIME),
        _timeout(),
    ]


def _mqtt() -> list[Field]:
    opt: dict[str, Any] = {**_install("identity"), "group": "options"}
    return [
        *_common("mqtt"),
        *_login(),
        *_tls(),
        Field("client_id", "Client id", "str", "messaging-console", **opt),
        Field("protocol_version", "Protocol version", "choice", "3.1.1", choices=("3.1.1", "5"),
              **_install("address"), group="options"),
        Field("keepalive", "Keepalive (s)", "int", 60, minimum=0, maximum=65535, **_RUNTIME),
        Field("clean_session", "Clean session", "bool", True, **_RUNTIME),
        Field("qos", "QoS", "choice", "1", choices=("0", "1", "2"), **_RUNTIME),
        _timeout(),
    ]


def _nats() -> list[Field]:
    sec: dict[str, Any] = {**_install("security"), "group": "security"}
    return [
        *_common("nats"),
        Field("servers", "Servers", "serverlist", None, **_install("address"),
              help="Comma-separated host:port list or nats:// / tls:// URLs (port 4222 by default); wins "
                   "over host and port when set."),
        *_login(),
        Field("token", "Token", "secret", None, **sec),
        *_tls(),
        Field("name", "Connection name", "str", "messaging-console", **_RUNTIME),
        Field("ping_interval", "Ping interval (s)", "int", 120, minimum=1, maximum=3600, **_RUNTIME),
        _timeout(),
    ]


def _rabbitmq() -> list[Field]:
    return [
        *_common("rabbitmq"),
        Field("addresses", "Addresses", "hostlist", None, **_install("address"),
              help="Comma-separated host:port list of the cluster's nodes; wins over host and port when set."),
        Field("vhost", "Virtual host", "str", "/", **_install("address")),
        *_login("guest", "guest"),
        *_tls(),
        Field("exchange", "Exchange", "str", "", **_install("identity"), group="options",
              help="Exchange the diagnostics declare passively (empty: the default exchange)."),
        Field("heartbeat", "Heartbeat (s)", "int", 60, minimum=0, maximum=3600, **_RUNTIME),
        Field("prefetch", "Prefetch count", "int", 10, minimum=0, maximum=65535, **_RUNTIME),
        _timeout(),
    ]


SCHEMA: dict[str, tuple[Field, ...]] = {
    "kafka": tuple(_kafka()),
    "pulsar": tuple(_pulsar()),
    "mqtt": tuple(_mqtt()),
    "nats": tuple(_nats()),
    "rabbitmq": tuple(_rabbitmq()),
}
assert tuple(SCHEMA) == PROTOCOLS

FIELDS: dict[str, dict[str, Field]] = {p: {f.name: f for f in fs} for p, fs in SCHEMA.items()}
FILE_SLOTS = ("tls_ca", "tls_cert")
GROUP_LABELS = {"connection": "Connection", "security": "Security", "options": "Options"}
PRIORITY_REASON = ("Installation-time: the platform picks each new adapter's protocol from this "
                   "order; existing adapters keep theirs.")
PRIORITY_ENV = "SP_PRIORITIZED_PROTOCOL"
# Apache StreamPipes orders kafka, mqtt, (jms), nats, pulsar by default; the console follows it, so a
# service that speaks Pulsar and MQTT gets the protocol it would get in StreamPipes.
DEFAULT_PRIORITIES: tuple[str, ...] = ("kafka", "mqtt", "nats", "pulsar", "rabbitmq")
assert sorted(DEFAULT_PRIORITIES) == sorted(PROTOCOLS)
ALIASES = {
    "KAFKA_BROKERS": "kafka",
    "NATS_SERVER_URL": "nats",
    "RABBIT_SERVER_URL": "rabbitmq",
}


def field_for(protocol: str, name: str) -> Field | None:
    """The field `name` of `protocol`, or None."""
    return FIELDS.get(protocol, {}).get(name)
