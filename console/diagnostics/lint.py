"""Pitfalls lint: findings on the effective settings that no connection test shows, from the
operators' common-pitfalls and tuning tables. Each finding says how bad, why it matters and how to fix
it.

One rule decides when a pitfall is reported: only for an enabled protocol, and only when the
operator's own values (saved or from the environment) create it — a setting left at the console's
default never warns by itself, so a fresh install shows none."""
from __future__ import annotations

from ..brokers import PROTOCOLS, SPECS
from ..brokers.spec import Pitfall, own
from ..messaging.identity import uses_tls
from ..messaging.resolve import ProtocolSettings
from ..messaging.schema import PROTOCOL_LABELS

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
Finding = Pitfall   # each protocol's own pitfalls are in its spec (console/brokers/<protocol>_spec.py)


def _security(s: ProtocolSettings) -> list[Finding]:
    out = []
    label = PROTOCOL_LABELS[s.protocol]
    secrets = [n for n in ("password", "token", "oauth2_client_secret")
               if n in s.fields and s.fields[n].is_set and own(s, n)]
    password = s.fields.get("password")
    if password and password.field.default and password.is_set and own(s, "username"):
        secrets = secrets or ["password"]     # the operator's user with the default password (RabbitMQ's guest)
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
    """A client name that another enabled protocol's client also uses, for a protocol whose broker
    disconnects a client when another takes its name (MQTT), when the operator set one of them (the
    console's defaults share one name, "messaging-console", on purpose)."""
    seen: dict[str, list[str]] = {}
    mine: set[str] = set()
    for protocol, s in all_settings.items():
        name = SPECS[protocol].client_name
        if not s.enabled or name is None:
            continue
        value = s.get(name)
        if name in s.fields and value:
            seen.setdefault(str(value), []).append(f"{protocol}.{name}")
            if own(s, name):
                mine.add(f"{protocol}.{name}")
    out = []
    for value, places in seen.items():
        if len(places) < 2 or not mine & set(places):
            continue
        for place in places:
            protocol, _, name = place.partition(".")
            spec = SPECS[protocol]
            if not spec.unique_client_name:
                continue
            others = ", ".join(p for p in places if not p.startswith(f"{protocol}."))
            out.append(Finding(protocol, name, "warning", f"Client id '{value}' is shared",
                               f"The same id is used by {others}. {spec.label} brokers disconnect a "
                               "client when another connects with its client id, and shared ids "
                               "make broker logs ambiguous.",
                               "Give every client its own id."))
    return out


def lint(all_settings: dict[str, ProtocolSettings]) -> list[Finding]:
    """Every pitfall of the enabled protocols' effective settings, most severe first."""
    out: list[Finding] = []
    for protocol, spec in SPECS.items():
        s = all_settings[protocol]
        if not s.enabled:
            continue
        out += _security(s)
        out += spec.pitfalls(s)
    out += _shared_client_ids(all_settings)
    return sorted(out, key=lambda f: (SEVERITY_ORDER[f.severity], PROTOCOLS.index(f.protocol)))
