"""Pitfalls lint: findings on the effective settings that no connection test shows, from the
operators' common-pitfalls and tuning tables. Each finding says how bad, why it matters and how to fix
it.

One rule decides when a pitfall is reported: only for an enabled protocol, and only when the
operator's own values (saved or from the environment) create it — a setting left at the console's
default never warns by itself, so a fresh install shows none."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..brokers import PROTOCOLS
from ..messaging.identity import uses_tls
from ..messaging.resolve import ProtocolSettings
from ..messaging.schema import PROTOCOL_LABELS

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
PREFETCH_LIMIT = 250


@dataclass(frozen=True)
class Finding:
    """One pitfall in one protocol's settings."""

    protocol: str
    field: str
    severity: str
    title: str
    why: str
    fix: str

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _own(s: ProtocolSettings, *names: str) -> bool:
    """Whether the operator set any of these fields (saved or environment), not the default."""
    return any(name in s.fields and s.fields[name].source != "default" for name in names)


def _mqtt(s: ProtocolSettings) -> list[Finding]:
    out = []
    qos = int(s.get("qos") or 0)
    if s.get("clean_session") and qos > 0 and _own(s, "clean_session", "qos"):
        out.append(Finding("mqtt", "clean_session", "warning",
                           "Clean session with QoS > 0",
                           "A clean session drops the subscription and its queued QoS 1/2 messages "
                           "whenever the client reconnects, so the delivery guarantee of QoS "
                           f"{qos} is lost across reconnects.",
                           "Turn clean session off (persistent session) with a stable client id."))
    if qos == 0:
        out.append(Finding("mqtt", "qos", "warning", "QoS 0 (at most once)",
                           "Messages are lost when the connection drops or the broker restarts.",
                           "Use QoS 1 where delivery matters; QoS 0 only for telemetry that may "
                           "be lost."))
    keepalive = int(s.get("keepalive") or 0)
    if not 30 <= keepalive <= 60:
        out.append(Finding("mqtt", "keepalive", "warning", f"Keepalive {keepalive} s",
                           "Below 30 s adds traffic and false disconnects on slow links; above "
                           "60 s (or 0, off) lets a dead connection go unnoticed for long.",
                           "Set keepalive between 30 and 60 seconds."))
    return out


def _kafka(s: ProtocolSettings) -> list[Finding]:
    out = []
    group, reset = s.get("group_id") or "", s.get("auto_offset_reset")
    if not group:
        out.append(Finding("kafka", "group_id", "error", "No consumer group id",
                           "Consumers without a group cannot commit offsets: every restart "
                           "re-reads or skips messages.",
                           "Set a group id that is unique to the consuming application."))
    if reset == "none":
        out.append(Finding("kafka", "auto_offset_reset", "warning", "auto.offset.reset = none",
                           f"A group without committed offsets (a new or renamed group id "
                           f"'{group}') makes consumers fail with NoOffsetForPartition.",
                           "Use earliest (process the backlog) or latest (only new messages)."))
    elif reset == "latest" and not _own(s, "group_id") and _own(s, "auto_offset_reset"):
        out.append(Finding("kafka", "auto_offset_reset", "info", "latest with the default group",
                           "A consumer group starting without offsets skips every message "
                           "already in the topic.",
                           "Choose earliest if the backlog matters, and set your own group id."))
    return out


def _rabbitmq(s: ProtocolSettings) -> list[Finding]:
    out = []
    prefetch = int(s.get("prefetch") or 0)
    if prefetch == 0 or prefetch > PREFETCH_LIMIT:
        shown = "unlimited (0)" if prefetch == 0 else str(prefetch)
        out.append(Finding("rabbitmq", "prefetch", "warning", f"Prefetch {shown}",
                           "A large prefetch piles unacknowledged messages on one consumer "
                           "(memory, unfair distribution, long redelivery after a crash).",
                           "Start around 10–50 and raise it only with measurements."))
    if int(s.get("heartbeat") or 0) == 0:
        out.append(Finding("rabbitmq", "heartbeat", "warning", "Heartbeat off",
                           "Without heartbeats a half-open TCP connection (a dead peer, a NAT "
                           "timeout) is not noticed and consumers silently stop receiving.",
                           "Set a heartbeat of 30–60 seconds."))
    return out


def _pulsar(s: ProtocolSettings) -> list[Finding]:
    if s.get("subscription_type") == "Exclusive" and int(s.get("consumers") or 1) > 1:
        return [Finding("pulsar", "subscription_type", "error",
                        "Exclusive subscription with several consumers",
                        f"Only one consumer may attach to an Exclusive subscription; the other "
                        f"{int(s.get('consumers')) - 1} are refused (ConsumerBusy).",
                        "Use Shared or Key_Shared to spread load, or Failover for a hot "
                        "standby.")]
    return []


def _security(s: ProtocolSettings) -> list[Finding]:
    out = []
    label = PROTOCOL_LABELS[s.protocol]
    secrets = [n for n in ("password", "token", "oauth2_client_secret")
               if n in s.fields and s.fields[n].is_set and _own(s, n)]
    if s.protocol == "rabbitmq" and s.fields["password"].is_set and _own(s, "username"):
        secrets = secrets or ["password"]     # the operator's user with the default password
    if secrets and not uses_tls(s):
        out.append(Finding(s.protocol, secrets[0], "warning", "Credentials over plaintext",
                           f"{label} sends the {', '.join(secrets)} unencrypted: anyone on the "
                           "network path can read it.",
                           "Turn TLS on (with the broker's CA as truststore)."))
    if uses_tls(s) and not s.get("tls_verify_hostname"):
        out.append(Finding(s.protocol, "tls_verify_hostname", "warning", "TLS verification off",
                           "Without host name verification any certificate signed by a trusted "
                           "CA is accepted for this broker: a man in the middle goes unnoticed.",
                           "Turn host name verification on; put the name you connect to in the "
                           "broker certificate's SANs."))
    for slot in ("tls_ca", "tls_cert"):
        value = s.fields[slot].value
        for cert in (value or {}).get("certificates", []) if isinstance(value, dict) else []:
            if cert["status"] in ("expired", "expiring"):
                expired = cert["status"] == "expired"
                left = "" if expired else f" ({cert['days_left']} days left)"
                out.append(Finding(s.protocol, slot, "error" if expired else "warning",
                                   f"Certificate {'expired' if expired else 'expiring'}: "
                                   f"{cert['subject']}",
                                   f"It is valid until {cert['not_after'][:10]}{left}; "
                                   "TLS handshakes fail after that.",
                                   "Replace it with a renewed certificate before it expires."))
    return out


def _shared_client_ids(all_settings: dict[str, ProtocolSettings]) -> list[Finding]:
    """An MQTT client id that another enabled protocol's client also uses, when the operator set
    one of them (the console's defaults share one name, "messaging-console", on purpose)."""
    seen: dict[str, list[str]] = {}
    own: set[str] = set()
    for protocol, s in all_settings.items():
        if not s.enabled:
            continue
        for name in ("client_id", "name", "subscription_name"):
            value = s.get(name)
            if name in s.fields and value:
                seen.setdefault(str(value), []).append(f"{protocol}.{name}")
                if _own(s, name):
                    own.add(f"{protocol}.{name}")
    out = []
    for value, places in seen.items():
        mqtt = [p for p in places if p.startswith("mqtt.")]
        if len(places) > 1 and mqtt and own & set(places):
            others = ", ".join(p for p in places if not p.startswith("mqtt."))
            out.append(Finding("mqtt", "client_id", "warning", f"Client id '{value}' is shared",
                               f"The same id is used by {others}. MQTT brokers disconnect a "
                               "client when another connects with its client id, and shared ids "
                               "make broker logs ambiguous.",
                               "Give every client its own id."))
    return out


def lint(all_settings: dict[str, ProtocolSettings]) -> list[Finding]:
    """Every pitfall of the enabled protocols' effective settings, most severe first."""
    out: list[Finding] = []
    for protocol in PROTOCOLS:
        s = all_settings[protocol]
        if not s.enabled:
            continue
        out += _security(s)
        out += {"mqtt": _mqtt, "kafka": _kafka, "rabbitmq": _rabbitmq,
                "pulsar": _pulsar}.get(protocol, lambda _: [])(s)
    out += _shared_client_ids(all_settings)
    return sorted(out, key=lambda f: (SEVERITY_ORDER[f.severity], PROTOCOLS.index(f.protocol)))
