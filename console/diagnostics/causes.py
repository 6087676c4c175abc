"""Cause codes (CONTRACT.md, "Diagnosis") as a one-line summary and an operator-facing fix, filled with
the concrete values a diagnosis found: host, port, vhost, mechanism, certificate subject and expiry, and
the broker's own words where they help.

The generic texts live here; a protocol's own texts live in its driver (`Driver.texts`, keyed
`cause` or `cause/variant`). Texts are looked up from the most specific to the least: the driver's
`cause/variant`, the generic `cause//variant`, the driver's `cause`, the generic `cause`. A variant names
a sub-case a step reported (`vhost`, `exchange`, `publish`, `user`, `operation_timeout`, `no_credentials`,
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
    "connection_closed": (
        "{where} accepted the TCP connection and closed it at once, before a single byte of {label} or TLS: "
        "nothing behind that port serves {label}.",
        "Typically a proxy or load balancer on {where} with no healthy backend (check its backends' health "
        "and the port it forwards to), an IP allow-list or firewall that accepts and drops this console's "
        "connections, or a broker that closes connections beyond its limit (Mosquitto max_connections): the "
        "proxy's or the broker's log shows why connections from this machine are closed."),
    "connection_limit": (
        "{label} at {where} refused the connection: a connection limit is reached.{said}",
        "Raise the broker's connection limit or close idle connections that hold it; then check again."),
    "tls_untrusted": (
        "The broker's certificate{cert_words} is not signed by {ca_words}.",
        "Upload the certificate of the CA that signed the broker certificate{issuer_words}, with any "
        "intermediate certificates, as the truststore (tls_ca){ca_note}."),
    "tls_expired": (
        "The broker's certificate{cert_words} {expiry_words}.",
        "Renew the certificate of the broker on {where} and reload its TLS listener (for a certificate that "
        "is not valid yet, check the clocks of the broker and of this console); turning verification off is "
        "not a fix."),
    "tls_not_yet_valid": (
        "The broker's certificate{cert_words} is not valid before {not_before_at}: its validity has not "
        "started yet.",
        "The certificate on {where} is valid only from {not_before_at} (notBefore): check the clocks of the "
        "broker host and of this console (date -u; NTP or timedatectl), since a clock running behind makes "
        "a new certificate look early; or reissue the certificate with a notBefore in the past and reload "
        "the broker's TLS listener. Turning verification off is not a fix."),
    "tls_client_cert_required": (
        "The broker on {where} requires a TLS client certificate and none is configured: it ended the TLS "
        "session ({words}).",
        "Upload a client certificate and its private key (tls_cert, tls_key) signed by a CA that the "
        "listener on {where} trusts; the broker's operator issues it (its CA file: RabbitMQ "
        "ssl_options.cacertfile, Mosquitto cafile, NATS tls ca_file)."),
    "tls_client_cert_rejected": (
        "The broker on {where} refused the TLS client certificate{client_words} ({words}).",
        "The listener on {where} does not trust this certificate{client_issuer_words}: upload a client "
        "certificate and key (tls_cert, tls_key) signed by a CA the broker trusts, valid now and with the "
        "clientAuth usage, or add its issuer to the broker's CA file (RabbitMQ ssl_options.cacertfile, "
        "Mosquitto cafile, NATS tls ca_file)."),
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
    "advertised_address_unreachable": (
        "The {label} server {where} answers, but the broker address it hands out, {advertised}, "
        "{advertised_problem} from this console.",
        "Make the broker advertise an address this console can resolve and reach (Kafka: advertised.listeners; "
        "Pulsar: advertisedAddress) instead of {advertised}, or make {advertised} resolvable and reachable "
        "from here (DNS, routing, firewall)."),
    "protocol_mismatch": (
        "{where} {speaks_words}, not {label}.",
        "The port belongs to another service{speaks_hint}: point the settings at the {label} broker's port "
        "(usually {default_port}{tls_port_or})."),
    "secret_unavailable": (
        "A secret reference of these settings does not resolve: {detail}. No broker was contacted.",
        "Mount the file or set the variable the reference names (or point the field at another "
        "reference, or a value); the console notices a file that appears within "
        "CONSOLE_REFERENCE_POLL_SECONDS."),
    "unknown//operation_timeout": (
        "The operation step ran out of time: {label} at {where} accepted the login but did not finish the "
        "operation within {timeout_s} ({detail}).",
        "The broker is reachable and accepted the login, so look at what the operation needs: the broker's "
        "load and log, a resource that is slow or blocked (a full disk, a blocked connection, a paused "
        "partition leader), or a larger timeout for a broker far away."),
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
        "client_words": f" ({facts['client_subject']}, issued by {facts.get('client_issuer')})"
        if facts.get("client_subject") else "",
        "client_issuer_words": f" (it is issued by {facts['client_issuer']})" if facts.get("client_issuer") else "",
        "not_before_at": facts.get("not_before_at") or facts.get("not_before") or "a date in the future",
        "advertised": facts.get("advertised") or "the advertised address",
        "advertised_problem": facts.get("advertised_problem") or "cannot be reached",
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
