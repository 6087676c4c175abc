"""Kafka as the settings model sees it: fields, the bootstrap list, the security protocol and its rules
(the driver is kafka.py)."""
from __future__ import annotations

from typing import Any

from .spec import (
    RUNTIME,
    SECURITY,
    Field,
    Finding,
    Pitfall,
    ProtocolSpec,
    Settings,
    common,
    connect_timeout,
    install,
    login,
    own,
    tls,
)
from .values import parse_hostlist

IDENTITY = install("identity", "options")


def security(s: Settings) -> str:
    """The Kafka security protocol in force: the saved/env choice, else derived from TLS and SASL."""
    explicit = s.get("security_protocol") or ""
    if explicit:
        return str(explicit)
    sasl = bool(s.get("sasl_mechanism"))
    if s.get("tls"):
        return "SASL_SSL" if sasl else "SSL"
    return "SASL_PLAINTEXT" if sasl else "PLAINTEXT"


class KafkaSpec(ProtocolSpec):
    name = "kafka"
    label = "Kafka"
    default_port = 9092
    driver = "console.brokers.kafka:KafkaDriver"
    node_list = "bootstrap_servers"
    server_list = True
    client_name = "client_id"
    aliases = {"KAFKA_BROKERS": lambda raw: ({"bootstrap_servers": parse_hostlist(raw)}, [])}
    fields = (
        *common(9092),
        Field("bootstrap_servers", "Bootstrap servers", "hostlist", None, **install("address"),
              help="Comma-separated host:port list; wins over host and port when set."),
        Field("security_protocol", "Security protocol", "choice", "",
              choices=("", "PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"), env_upper=True, **SECURITY,
              help="Empty: derived from TLS and the SASL mechanism."),
        Field("sasl_mechanism", "SASL mechanism", "choice", "",
              choices=("", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"), **SECURITY,
              help="Empty: no SASL login."),
        *login(),
        *tls(),
        Field("client_id", "Client id", "str", "messaging-console", **IDENTITY),
        Field("group_id", "Consumer group id", "str", "messaging-console", **IDENTITY),
        Field("auto_offset_reset", "Auto offset reset", "choice", "latest",
              choices=("earliest", "latest", "none"), **RUNTIME,
              help="Where a consumer group without a committed offset starts."),
        Field("topic", "Topic", "str", "", **IDENTITY, help="Topic the diagnostics look up."),
        Field("session_timeout_ms", "Session timeout (ms)", "int", 45000, minimum=1000,
              maximum=3_600_000, **RUNTIME),
        connect_timeout(),
    )

    def uses_tls(self, s: Settings) -> bool:
        return security(s).endswith("SSL")

    def asks_tls(self, s: Settings) -> bool:
        return bool(s.get("tls")) or security(s).endswith("SSL")

    def derived(self, s: Settings) -> dict[str, Any]:
        return {"security_protocol": security(s)}

    def rules(self, s: Settings) -> list[Finding]:
        out: list[Finding] = []
        explicit = s.get("security_protocol") or ""
        mechanism = s.get("sasl_mechanism") or ""
        if explicit.startswith("SASL") and not mechanism:
            out.append(Finding(("security_protocol", "sasl_mechanism"), "sasl_mechanism",
                               f"{explicit} needs a SASL mechanism: choose PLAIN, SCRAM-SHA-256 or "
                               "SCRAM-SHA-512."))
        if explicit in ("PLAINTEXT", "SSL") and mechanism:
            out.append(Finding(("security_protocol", "sasl_mechanism"), "security_protocol",
                               f"A SASL mechanism is set but {explicit} does not log in: choose "
                               f"SASL_{'SSL' if explicit == 'SSL' else 'PLAINTEXT'}, or clear the "
                               "mechanism."))
        if explicit.endswith("SSL") and not s.get("tls"):
            out.append(Finding(("security_protocol", "tls"), "tls",
                               f"{explicit} encrypts with TLS: turn TLS on."))
        if explicit in ("PLAINTEXT", "SASL_PLAINTEXT") and s.get("tls"):
            out.append(Finding(("security_protocol", "tls"), "security_protocol",
                               f"TLS is on but {explicit} is plaintext: choose SSL or SASL_SSL."))
        if security(s).startswith("SASL"):
            if not s.get("username"):
                out.append(Finding(("sasl_mechanism", "username"), "username",
                                   "SASL needs a username."))
            if not s.fields["password"].is_set:
                out.append(Finding(("sasl_mechanism", "password"), "password",
                                   "SASL needs a password."))
        return out

    def pitfalls(self, s: Settings) -> list[Pitfall]:
        out = []
        group, reset = s.get("group_id") or "", s.get("auto_offset_reset")
        if not group:
            out.append(Pitfall(self.name, "group_id", "error", "No consumer group id",
                               "Consumers without a group cannot commit offsets: every restart "
                               "re-reads or skips messages.",
                               "Set a group id that is unique to the consuming application."))
        if reset == "none":
            out.append(Pitfall(self.name, "auto_offset_reset", "warning", "auto.offset.reset = none",
                               f"A group without committed offsets (a new or renamed group id "
                               f"'{group}') makes consumers fail with NoOffsetForPartition.",
                               "Use earliest (process the backlog) or latest (only new messages)."))
        elif reset == "latest" and not own(s, "group_id") and own(s, "auto_offset_reset"):
            out.append(Pitfall(self.name, "auto_offset_reset", "info", "latest with the default group",
                               "A consumer group starting without offsets skips every message "
                               "already in the topic.",
                               "Choose earliest if the backlog matters, and set your own group id."))
        return out


SPEC = KafkaSpec()
