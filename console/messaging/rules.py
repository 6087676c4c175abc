"""Rules that span several fields of one protocol, checked on the candidate effective settings.

A rule names every field it involves. When all of them come from the environment, the person at the
page cannot fix it there, so it is reported as a warning about the environment instead of blocking
an unrelated save.
"""
from __future__ import annotations

from dataclasses import dataclass

from .resolve import ProtocolSettings


@dataclass(frozen=True)
class Finding:
    """One rule's verdict: an error blocks saving, a warning is shown."""

    fields: tuple[str, ...]
    target: str
    message: str
    severity: str = "error"


def kafka_security(s: ProtocolSettings) -> str:
    """The Kafka security protocol in force: the saved/env choice, else derived from TLS and SASL."""
    explicit = s.get("security_protocol") or ""
    if explicit:
        return explicit
    sasl = bool(s.get("sasl_mechanism"))
    if s.get("tls"):
        return "SASL_SSL" if sasl else "SSL"
    return "SASL_PLAINTEXT" if sasl else "PLAINTEXT"


def _kafka(s: ProtocolSettings) -> list[Finding]:
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
    if kafka_security(s).startswith("SASL"):
        if not s.get("username"):
            out.append(Finding(("sasl_mechanism", "username"), "username",
                               "SASL needs a username."))
        if not s.fields["password"].is_set:
            out.append(Finding(("sasl_mechanism", "password"), "password",
                               "SASL needs a password."))
    return out


def _pulsar(s: ProtocolSettings) -> list[Finding]:
    out: list[Finding] = []
    url = s.get("url") or ""
    if url.startswith("pulsar+ssl://") and not s.get("tls"):
        out.append(Finding(("url", "tls"), "tls", "The URL is pulsar+ssl://: turn TLS on."))
    if url.startswith("pulsar://") and s.get("tls"):
        out.append(Finding(("url", "tls"), "url",
                           "TLS is on but the URL is pulsar://: use pulsar+ssl://."))
    oauth = [n for n in ("oauth2_issuer_url", "oauth2_client_id") if s.get(n)]
    if oauth and len(oauth) < 2:
        missing = "oauth2_client_id" if "oauth2_issuer_url" in oauth else "oauth2_issuer_url"
        out.append(Finding(("oauth2_issuer_url", "oauth2_client_id"), missing,
                           "OAuth2 needs both the issuer URL and the client id."))
    if oauth and s.fields["token"].is_set:
        out.append(Finding(("token", "oauth2_issuer_url"), "token",
                           "Use either a token or OAuth2, not both."))
    issuer = s.get("oauth2_issuer_url") or ""
    if issuer and not issuer.startswith(("https://", "http://")):
        out.append(Finding(("oauth2_issuer_url",), "oauth2_issuer_url",
                           "The issuer URL must start with https://."))
    return out


def _login_pair(s: ProtocolSettings, password_required: bool) -> list[Finding]:
    out: list[Finding] = []
    user = s.get("username")
    password_set = s.fields["password"].is_set
    if password_set and not user:
        out.append(Finding(("username", "password"), "username", "A password needs a username."))
    if user and password_required and not password_set:
        out.append(Finding(("username", "password"), "password",
                           f"Give the password of {user}."))
    return out


def _nats(s: ProtocolSettings) -> list[Finding]:
    out = _login_pair(s, password_required=True)
    if s.fields["token"].is_set and s.get("username"):
        out.append(Finding(("token", "username"), "token",
                           "Use either a token or a username and password, not both."))
    return out


def _tls_common(s: ProtocolSettings) -> list[Finding]:
    out: list[Finding] = []
    cert = s.fields["tls_cert"]
    for f in (s.fields["tls_ca"], cert, s.fields["tls_key"]):
        if isinstance(f.value, dict) and f.value.get("error"):
            out.append(Finding((f.field.name,), f.field.name, f.value["error"]))
    uses_tls = s.get("tls") or (s.protocol == "kafka" and kafka_security(s).endswith("SSL"))
    if uses_tls and not s.fields["tls_ca"].is_set:
        out.append(Finding(("tls", "tls_ca"), "tls_ca",
                           "TLS is on without a truststore: the system CA store will be used, "
                           "which only trusts public CAs.", "warning"))
    if not uses_tls and (cert.is_set or s.fields["tls_ca"].is_set):
        out.append(Finding(("tls",), "tls",
                           "TLS material is stored but TLS is off: it is not used.", "warning"))
    if uses_tls and not s.get("tls_verify_hostname"):
        out.append(Finding(("tls_verify_hostname",), "tls_verify_hostname",
                           "Host name verification is off: any certificate from the trusted CA "
                           "is accepted for any host.", "warning"))
    return out


def check(s: ProtocolSettings) -> list[Finding]:
    """Every cross-field finding of one protocol's candidate settings."""
    found = _tls_common(s)
    if s.protocol == "kafka":
        found += _kafka(s)
    elif s.protocol == "pulsar":
        found += _pulsar(s)
    elif s.protocol == "nats":
        found += _nats(s)
    elif s.protocol == "rabbitmq":
        found += _login_pair(s, password_required=True)
    elif s.protocol == "mqtt":
        found += _login_pair(s, password_required=False)
    return found
