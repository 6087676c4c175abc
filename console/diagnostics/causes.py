"""Cause codes (CONTRACT.md, "Diagnosis") as a one-line summary and an operator-facing fix, filled with
the concrete values a diagnosis found: host, port, vhost, mechanism, certificate subject and expiry, and
the broker's own words where they help.

Texts are looked up from the most specific key to the least: `cause/protocol/variant`,
`cause//variant`, `cause/protocol`, `cause`. A variant names a sub-case a step reported (`vhost`,
`exchange`, `topic`, `client_certificate`, `no_credentials`, `sasl_required`, ...).
"""
from __future__ import annotations

from typing import Any, Mapping

from ..brokers.base import CAUSES

LABELS = {"kafka": "Kafka", "pulsar": "Pulsar", "mqtt": "MQTT", "nats": "NATS", "rabbitmq": "RabbitMQ"}
PORTS = {"kafka": (9092, None), "pulsar": (6650, 6651), "mqtt": (1883, 8883), "nats": (4222, None),
         "rabbitmq": (5672, 5671)}
_SPEAKS_PROTOCOL = {"AMQP": "rabbitmq", "MQTT": "mqtt", "NATS": "nats", "Kafka": "kafka", "Pulsar": "pulsar"}
_TLS_ON = {
    "kafka": "set security_protocol to SSL, or SASL_SSL with a SASL login",
    "pulsar": "use a pulsar+ssl:// service URL",
}
_TLS_OFF = {
    "kafka": "set security_protocol to PLAINTEXT, or SASL_PLAINTEXT with a SASL login",
    "pulsar": "use a pulsar:// service URL",
}

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
    "tls_required/nats": (
        "The NATS server at {where} requires TLS (its INFO says tls_required), but TLS is off in the settings.",
        "Turn TLS on and upload the CA that signed the server certificate as the truststore; nats-py would "
        "otherwise upgrade on its own with the system CAs and fail."),
    "tls_not_offered": (
        "{where} answers {label} in plaintext: TLS is on in the settings but the port does not offer it.",
        "Point the settings at the broker's TLS listener{tls_port_words}; if this listener is meant to be "
        "plaintext, {tls_off}."),
    "tls_not_offered/nats": (
        "The NATS server at {where} does not offer TLS (its INFO has neither tls_required nor tls_available): "
        "nats-py would silently stay unencrypted.",
        "Enable TLS on the server (a tls {{ cert_file, key_file }} block in nats-server.conf) or point the "
        "settings at a TLS-enabled server; turn TLS off only if plaintext is intended."),
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
    "auth_failed/rabbitmq": (
        "RabbitMQ refused the login of {username}.{said}",
        "Check the username and password of {username} (rabbitmqctl authenticate_user {username} <password> "
        "on the broker tells whether they match); note that the built-in guest user may log in only from "
        "localhost."),
    "auth_failed/mqtt": (
        "The MQTT broker answered CONNACK with reason code {reason_code} \"{reason}\" for {login}.",
        "Check the username and password (Mosquitto: an entry in the password_file, created with "
        "mosquitto_passwd); a listener with allow_anonymous false refuses clients without credentials."),
    "auth_failed/mqtt/no_credentials": (
        "The MQTT broker does not accept anonymous clients: CONNACK reason code {reason_code} \"{reason}\".",
        "Set a username and password for this broker (the listener has allow_anonymous false)."),
    "auth_failed/nats": (
        "The NATS server refused the login ({login}): 'Authorization Violation'.",
        "Check the user and password or the token against the server's authorization block; a server "
        "configured with a token refuses user/password logins and vice versa."),
    "auth_failed/nats/no_credentials": (
        "The NATS server requires authentication (its INFO says auth_required) and no credentials are "
        "set: 'Authorization Violation'.",
        "Set a username and password or a token, as configured in the server's authorization block."),
    "auth_failed/kafka": (
        "The SASL {mechanism} login of {username} failed.{said}",
        "Check the SASL username and password, and that the user has {mechanism} credentials on the broker "
        "(kafka-configs.sh --alter --add-config '{mechanism}=[password=...]' --entity-type users "
        "--entity-name {username})."),
    "auth_failed/kafka/sasl_required": (
        "The Kafka listener on {where} closed the connection before answering metadata: it requires a "
        "SASL login, and none is configured.{said}",
        "Set sasl_mechanism, username and password (security_protocol SASL_PLAINTEXT, or SASL_SSL with "
        "TLS) as the listener expects."),
    "auth_failed/pulsar": (
        "The Pulsar broker refused the authentication ({login}).{said}",
        "Check the token (not expired, signed with the broker's key, its subject known to the broker) or "
        "the configured OAuth2 / basic credentials."),
    "sasl_mechanism_unsupported": (
        "The broker does not offer SASL {mechanism}{offered_words}.{said}",
        "Set sasl_mechanism to one the broker offers{offered_list}, or enable {mechanism} on the broker "
        "(Kafka: sasl.enabled.mechanisms of the listener)."),
    "sasl_mechanism_unsupported//listed": (
        "The broker refused the SASL {mechanism} handshake as unsupported although it lists {offered}: this "
        "listener most likely takes no SASL login at all.{said}",
        "Use the broker's SASL listener, or set security_protocol to PLAINTEXT (SSL with TLS) if this "
        "listener is meant to be used without a login."),
    "sasl_mechanism_unsupported/rabbitmq": (
        "RabbitMQ offers the SASL mechanisms {offered}, not PLAIN (the console logs in with PLAIN).",
        "Enable PLAIN on the broker (auth_mechanisms.1 = PLAIN in rabbitmq.conf) or use a broker listener "
        "that offers it."),
    "access_denied": (
        "The broker refused the operation for {login}.{said}",
        "Grant {login} the permission the operation needs on the broker."),
    "access_denied/rabbitmq/vhost": (
        "User {username} may not use the vhost {vhost}.{said}",
        "Grant permissions: rabbitmqctl set_permissions -p {vhost} {username} '.*' '.*' '.*' (or Admin → "
        "Users → {username} → Set permission in the management UI), or use a vhost the user may access."),
    "access_denied/rabbitmq/exchange": (
        "User {username} may not use the exchange {exchange} in vhost {vhost}.{said}",
        "Grant the user permissions on {exchange} in vhost {vhost} (rabbitmqctl set_permissions -p {vhost} "
        "{username} ...)."),
    "access_denied/mqtt": (
        "The MQTT broker refused the diagnostics subscription or publish on {topic}.{said}",
        "Allow {login} to publish and subscribe on messaging-console/diagnostics/# in the broker's ACL "
        "(Mosquitto acl_file: topic readwrite messaging-console/diagnostics/#)."),
    "access_denied/mqtt/no_echo": (
        "The MQTT broker accepted the subscription and the publish on {topic} but never delivered the "
        "message within the time left: its ACL most likely drops it (MQTT 3.1.1 brokers drop denied "
        "publishes silently).",
        "Allow {login} to publish and subscribe on messaging-console/diagnostics/# in the broker's ACL "
        "(Mosquitto acl_file: topic readwrite messaging-console/diagnostics/#)."),
    "access_denied/nats": (
        "The NATS server refused the request on a private inbox for {login}.{said}",
        "Allow the user to publish and subscribe on _INBOX.> in the server's permissions block "
        "(permissions {{ publish: [\"_INBOX.>\"], subscribe: [\"_INBOX.>\"] }})."),
    "access_denied/kafka": (
        "The Kafka cluster refused to describe the topic {topic} to {login}.{said}",
        "Grant DESCRIBE on the topic: kafka-acls.sh --add --allow-principal User:{username} --operation "
        "Describe --topic {topic} --bootstrap-server {target}."),
    "access_denied/pulsar": (
        "The Pulsar broker refused the lookup of {topic} for {login}.{said}",
        "Grant the role permissions on the namespace (pulsar-admin namespaces grant-permission "
        "<tenant>/<namespace> --role <role> --actions produce,consume)."),
    "not_found": (
        "The broker answered that a configured resource does not exist.{said}",
        "Create it on the broker or correct the setting."),
    "not_found/rabbitmq/vhost": (
        "The vhost {vhost} does not exist on RabbitMQ.{said}",
        "Create it and grant the user access (rabbitmqctl add_vhost {vhost}; rabbitmqctl set_permissions -p "
        "{vhost} {username} '.*' '.*' '.*'), or correct the vhost setting (names are case-sensitive; the "
        "default vhost is \"/\")."),
    "not_found/rabbitmq/exchange": (
        "The exchange {exchange} does not exist in the vhost {vhost}.{said}",
        "Declare it (rabbitmqadmin -V {vhost} declare exchange name={exchange} type=topic durable=true), let "
        "the application declare it at start-up, or correct the exchange setting; the diagnosis only "
        "declares passively and never creates it."),
    "not_found/kafka": (
        "The topic {topic} does not exist on the cluster.{said}",
        "Create it (kafka-topics.sh --create --topic {topic} --bootstrap-server {target} --partitions <n> "
        "--replication-factor <r>) or correct the topic setting; the diagnosis never creates topics."),
    "not_found/pulsar": (
        "The topic {topic} was not found.{said}",
        "Create it (pulsar-admin topics create {topic}), check its tenant and namespace, or correct the "
        "topic setting."),
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


def _text_for(cause: str, protocol: str, variant: str) -> tuple[str, str]:
    for key in (f"{cause}/{protocol}/{variant}", f"{cause}//{variant}", f"{cause}/{protocol}", cause):
        if key in TEXTS:
            return TEXTS[key]
    return TEXTS["unknown"]


def _derived(facts: Mapping[str, Any]) -> dict[str, Any]:
    protocol = str(facts.get("protocol", ""))
    label = facts.get("label") or LABELS.get(protocol, protocol)
    plain, tls = PORTS.get(protocol, (None, None))
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
        "address_field": "bootstrap_servers (or host)" if protocol == "kafka"
        else "url (or host)" if protocol == "pulsar" else "host",
        "said": f' {facts.get("source") or "The broker said"}: "{words}".' if words else "",
        "login": facts.get("login") or (f"user {facts['username']}" if facts.get("username") else "anonymous"),
        "usual_ports": f"; {label} usually listens on {plain}" + (f" ({tls} with TLS)" if tls else "")
        if plain else "",
        "timeout_s": f"{float(timeout):g} s" if timeout else "the time allowed",
        "tls_on": _TLS_ON.get(protocol, "tls = true"),
        "tls_off": _TLS_OFF.get(protocol, "turn TLS off"),
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
    other = _SPEAKS_PROTOCOL.get(str(speaks or ""))
    if not other:
        return ""
    plain, tls = PORTS[other]
    usual = f"{plain}" + (f"/{tls}" if tls else "")
    return f" (a {LABELS[other]} port, usually {usual})"


def explain(cause: str, facts: Mapping[str, Any]) -> tuple[str, str]:
    """The summary and the fix of `cause`, filled with `facts` (what the diagnosis found)."""
    protocol = str(facts.get("protocol", ""))
    summary, fix = _text_for(cause, protocol, str(facts.get("variant") or ""))
    values = _Facts({k: v for k, v in facts.items() if v is not None})
    values.update(_derived(facts))
    return summary.format_map(values), fix.format_map(values)
