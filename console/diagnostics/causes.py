"""Cause codes (CONTRACT.md, "Diagnosis") as a one-line summary and an operator-facing fix, filled with
the concrete values a diagnosis found: host, port, vhost, mechanism, certificate subject and expiry, and
the broker's own words where they help.

The generic texts live here; a protocol's own texts live in its driver (`Driver.texts`, keyed
`cause` or `cause/variant`). Texts are looked up from the most specific to the least: the driver's
`cause/variant`, the generic `cause//variant`, the driver's `cause`, the generic `cause`. A variant names
a sub-case a step reported (`vhost`, `exchange`, `client_certificate`, `no_credentials`,
`sasl_required`, ...).
"""
from __future__ import annotations

from typing import Any, Mapping

from ..brokers import driver_class, driver_classes
from ..brokers.base import CAUSES, Driver

TEXTS: dict[str, tuple[str, str]] = {
    "ok": ("{label} at {target} answered every step ({identity}).", ""),
    "dns_failure": (
        "{dns_error}",
        "Correct the host name in the {address_field} setting (a typo, or a name known only inside another "
        "network such as a Docker network, a Kubernetes namespace or a VPN), or use the broker's IP address; "
        "check that this console's machine can resolve it (getent hosts {host})."),
    "connection_refused": (
        "Nothing accepts connections on {where}: the connection was refused.",
        "Start the {label} broker, or correct the host and port: nothing listens on port {port} of {host}. A "
        "broker bound only to its own loopback address (inside a container, say) refuses connections from "
        "elsewhere too{usual_ports}."),
    "connect_timeout": (
        "{where} did not answer the TCP connection attempt within {timeout_s}: the packets are dropped on "
        "the way.",
        "A firewall, security group or network policy drops traffic to port {port}, or {host} is not the "
        "broker's reachable address: open the port from this console to the broker, or correct the host."),
    "handshake_timeout": (
        "{where} accepted the TCP connection but never answered the {label} handshake within {timeout_s}.",
        "Something on that port accepts connections without speaking {label}: a stuck broker, a proxy or load "
        "balancer without a healthy backend, or a port that expects another protocol. Check which process "
        "listens on {port} and the broker's log{tls_mismatch_hint}."),
    "tls_untrusted": (
        "The broker's certificate{cert_words} is not signed by {ca_words}.",
        "Upload the certificate of the CA that signed the broker certificate{issuer_words}, with any "
        "intermediate certificates, as the truststore (tls_ca){ca_note}."),
    "tls_expired": (
        "The broker's certificate{cert_words} {expiry_words}.",
        "Renew the certificate of the broker on {where} and reload its TLS listener (for a certificate that "
        "is not valid yet, check the clocks of the broker and of this console); turning verification off is "
        "not a fix."),
    "tls_hostname_mismatch": (
        "The broker's certificate is valid for {sans_words}, not for {server_name}.",
        "Connect with a name the certificate lists ({sans_words}): set host to it; or reissue the broker "
        "certificate with {server_name} in its Subject Alternative Names. Turning tls_verify_hostname off "
        "only hides the problem."),
    "tls_required": (
        "{where} speaks TLS, but TLS is off in the settings.",
        "Turn TLS on ({tls_on}) and upload the CA that signed the broker certificate as the truststore, or "
        "point the settings at the broker's plaintext listener{plain_port}."),
    "tls_not_offered": (
        "{where} answers {label} in plaintext: TLS is on in the settings but the port does not offer it.",
        "Point the settings at the broker's TLS listener{tls_port_words}; if this listener is meant to be "
        "plaintext, {tls_off}."),
    "auth_failed": (
        "The broker refused the login ({login}).{said}",
        "Check username and password (or token) against the broker's user database; the broker's log says "
        "why a login failed."),
    "auth_failed//client_certificate_missing": (
        "The broker on {where} asks for a TLS client certificate and none is configured: it ended the TLS "
        "session before answering ({words}).",
        "Upload a client certificate and its key (tls_cert, tls_key) signed by a CA the broker trusts; the "
        "listener on {where} requires one."),
    "auth_failed//client_certificate": (
        "The broker rejected the TLS connection because of the client certificate ({words}).",
        "Upload a client certificate and key (tls_cert, tls_key) signed by a CA the broker trusts; the "
        "listener on {where} requires one."),
    "sasl_mechanism_unsupported": (
        "The broker does not offer SASL {mechanism}{offered_words}.{said}",
        "Set sasl_mechanism to one the broker offers{offered_list}, or enable {mechanism} on the broker "
        "(Kafka: sasl.enabled.mechanisms of the listener)."),
    "sasl_mechanism_unsupported//listed": (
        "The broker refused the SASL {mechanism} handshake as unsupported although it lists {offered}: this "
        "listener most likely takes no SASL login at all.{said}",
        "Use the broker's SASL listener, or set security_protocol to PLAINTEXT (SSL with TLS) if this "
        "listener is meant to be used without a login."),
    "access_denied": (
        "The broker refused the operation for {login}.{said}",
        "Grant {login} the permission the operation needs on the broker."),
    "not_found": (
        "The broker answered that a configured resource does not exist.{said}",
        "Create it on the broker or correct the setting."),
    "protocol_mismatch": (
        "{where} {speaks_words}, not {label}.",
        "The port belongs to another service{speaks_hint}: point the settings at the {label} broker's port "
        "(usually {default_port}{tls_port_or})."),
    "unknown": (
        "The diagnosis stopped at the {step} step: {detail}",
        "Check the broker's log around this time and the step's detail; if the cause stays unclear, "
        "download the report (JSON) and attach it to a support request."),
}
assert {key.split("/")[0] for key in TEXTS} <= set(CAUSES) and set(CAUSES) <= {k.split("/")[0] for k in TEXTS}


class _Facts(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def _driver(protocol: str) -> type[Driver] | None:
    """The driver class of `protocol`, or None when there is none or its client library is missing."""
    try:
        return driver_class(protocol)
    except (ImportError, KeyError):
        return None


def label(protocol: str) -> str:
    """The protocol's name as operators write it (Kafka, RabbitMQ, ...)."""
    driver = _driver(protocol)
    return driver.label if driver else protocol


def _text_for(cause: str, protocol: str, variant: str) -> tuple[str, str]:
    driver = _driver(protocol)
    own: Mapping[str, tuple[str, str]] = driver.texts if driver else {}
    for texts, key in ((own, f"{cause}/{variant}"), (TEXTS, f"{cause}//{variant}"), (own, cause), (TEXTS, cause)):
        if key in texts:
            return texts[key]
    return TEXTS["unknown"]


def all_texts() -> dict[str, tuple[str, str]]:
    """Every cause text, the drivers' own ones keyed `cause/protocol[/variant]`."""
    out = dict(TEXTS)
    for protocol, driver in driver_classes().items():
        for key, text in driver.texts.items():
            cause, _, variant = key.partition("/")
            out[f"{cause}/{protocol}" + (f"/{variant}" if variant else "")] = text
    return out


def _derived(facts: Mapping[str, Any]) -> dict[str, Any]:
    protocol = str(facts.get("protocol", ""))
    driver = _driver(protocol)
    label = facts.get("label") or (driver.label if driver else protocol)
    plain, tls = (driver.default_port, driver.tls_port) if driver else (None, None)
    words = str(facts.get("words") or "").strip().rstrip(".")
    sans = [str(name).split(":", 1)[-1] for name in facts.get("sans") or []]
    issuer, subject = facts.get("issuer"), facts.get("subject")
    ca = facts.get("ca_subjects")
    offered = facts.get("offered") or ""
    speaks = facts.get("speaks")
    timeout = facts.get("timeout")
    out: dict[str, Any] = {
        "label": label,
        "default_port": plain or "?",
        "address_field": driver.address_field if driver else "host",
        "said": f' {facts.get("source") or "The broker said"}: "{words}".' if words else "",
        "login": facts.get("login") or (f"user {facts['username']}" if facts.get("username") else "anonymous"),
        "usual_ports": f"; {label} usually listens on {plain}" + (f" ({tls} with TLS)" if tls else "")
        if plain else "",
        "timeout_s": f"{float(timeout):g} s" if timeout else "the time allowed",
        "tls_on": driver.tls_on if driver else "tls = true",
        "tls_off": driver.tls_off if driver else "turn TLS off",
        "plain_port": f" (usually {plain})" if plain else "",
        "tls_port_words": f" (usually {tls})" if tls else "",
        "tls_port_or": f", {tls} with TLS" if tls else "",
        "tls_mismatch_hint": "; if the port expects TLS, turn TLS on" if not facts.get("tls")
        else "; if the port is plaintext, turn TLS off",
        "cert_words": f" ({subject}{', issued by ' + issuer if issuer else ''})" if subject else "",
        "issuer_words": f" ({issuer})" if issuer else "",
        "ca_words": "the configured truststore" + (f" ({'; '.join(ca)})" if ca else "")
        if facts.get("ca_file") else "any CA of the system store (no truststore is configured)",
        "ca_note": "; no truststore is configured, so only the system's public CAs were trusted"
        if not facts.get("ca_file") else (f"; the configured truststore holds {'; '.join(ca)}" if ca else ""),
        "sans_words": ", ".join(sans) if sans else "no host name (the certificate has no Subject Alternative "
                                                    "Names)",
        "expiry_words": _expiry_words(facts),
        "offered_words": f" (it offers {offered})" if offered else "",
        "offered_list": f" ({offered})" if offered else "",
        "speaks_words": f"speaks {speaks}" if speaks else "does not speak the protocol",
        "speaks_hint": _speaks_hint(speaks),
        "mechanism": facts.get("mechanism") or "PLAIN",
        "username": facts.get("username") or "the user",
    }
    return out


def _expiry_words(facts: Mapping[str, Any]) -> str:
    days = facts.get("days_left")
    if facts.get("cert_status") == "not_yet_valid":
        return f"is not valid before {facts.get('not_before', '?')}"
    when = f"expired on {facts.get('not_after', '?')}"
    if isinstance(days, int) and days < 0:
        when += f" ({-days} day{'s' if days != -1 else ''} ago)"
    return when


def _speaks_hint(speaks: Any) -> str:
    other = next((driver for driver in driver_classes().values()
                  if driver.wire().greeting.protocol == str(speaks or "")), None) if speaks else None
    if other is None:
        return ""
    usual = f"{other.default_port}" + (f"/{other.tls_port}" if other.tls_port else "")
    return f" (a {other.label} port, usually {usual})"


def explain(cause: str, facts: Mapping[str, Any]) -> tuple[str, str]:
    """The summary and the fix of `cause`, filled with `facts` (what the diagnosis found)."""
    protocol = str(facts.get("protocol", ""))
    summary, fix = _text_for(cause, protocol, str(facts.get("variant") or ""))
    values = _Facts({k: v for k, v in facts.items() if v is not None})
    values.update(_derived(facts))
    return summary.format_map(values), fix.format_map(values)
