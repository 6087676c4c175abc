"""Formats: what a platform already reads, made from the console's document.

Environment formats (`streampipes`, `gateway`) give variables; file formats (`roboconf`, `dotenv`,
`json`, `template`) give the text of one file. TLS material (PEM) is written as files in the TLS
directory and named by path. A field that a format cannot carry raises `CannotCarry` (one line naming
the field and the format): nothing is dropped silently.
"""
from __future__ import annotations

import json
import os
import re
import string
import urllib.parse
from pathlib import Path
from typing import Any

ENV_FORMATS = ("streampipes", "gateway")
FILE_FORMATS = ("roboconf", "dotenv", "json", "template")
FORMATS = ENV_FORMATS + FILE_FORMATS
PEM_FIELDS = {"tls_ca": "CA_FILE", "tls_cert": "CERT_FILE", "tls_key": "KEY_FILE"}
SECRET_FIELDS = ("password", "token", "tls_key", "oauth2_client_secret")
DERIVED = ("nodes", "tls_active", "enabled")      # in the document, not settings of their own
# what each protocol is reached with (a format that does not carry one of these, set, cannot be used);
# every other field tunes the client (topic, group, timeouts) and the program keeps its own.
CONNECTION = {"host", "port", "bootstrap_servers", "servers", "addresses", "url", "vhost", "username",
              "password", "token", "tls", "tls_ca", "tls_cert", "tls_key", "tls_verify_hostname",
              "security_protocol", "sasl_mechanism", "oauth2_issuer_url", "oauth2_client_id",
              "oauth2_client_secret", "oauth2_audience"}
NEUTRAL: dict[str, tuple[Any, ...]] = {"vhost": ("/",), "tls_verify_hostname": (True,),
                                       "security_protocol": ("", "PLAINTEXT"), "sasl_mechanism": ("",)}


class CannotCarry(Exception):
    """A field of the document the chosen format cannot carry."""

    def __init__(self, fmt: str, protocol: str, field: str, why: str = "", line: str = "") -> None:
        super().__init__(line or (f"format {fmt} cannot carry {protocol}.{field}"
                                  + (f" ({why})" if why else "")
                                  + "; choose a format that can (streampipes, dotenv, json or a template)"))


def is_set(field: str, value: Any) -> bool:
    """Whether a field's value asks for something (not empty and not the neutral default)."""
    if value in (None, "", False, [], {}) or (isinstance(value, dict) and not value.get("set", True)):
        return False
    return value not in NEUTRAL.get(field, ())


def secrets_of(document: dict) -> list[str]:
    """Every secret value of the document (to keep them out of messages and logs)."""
    found = []
    for values in (document.get("brokers") or {}).values():
        for name in SECRET_FIELDS:
            value = values.get(name)
            if isinstance(value, str) and value:
                found.append(value)
    return found


def scrub(text: str, secrets: list[str]) -> str:
    """`text` with every secret (as given and percent-encoded) replaced by ***."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) < 3 and not secret.strip():
            continue
        for form in {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote(secret)}:
            text = text.replace(form, "***")
    return text


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def pem_files(document: dict, tls_dir: Path | None) -> dict[tuple[str, str], str]:
    """Write the document's PEM material into `tls_dir` (0600); {(protocol, field): path}."""
    paths: dict[tuple[str, str], str] = {}
    for protocol, values in (document.get("brokers") or {}).items():
        for field in PEM_FIELDS:
            pem = values.get(field)
            if isinstance(pem, str) and pem:
                if tls_dir is None:
                    raise CannotCarry("(no --tls-dir)", protocol, field, "PEM material needs a directory")
                path = tls_dir / f"{protocol}-{field.replace('tls_', '')}.pem"
                write_private(path, pem)
                paths[(protocol, field)] = str(path)
    return paths


def streampipes(document: dict, tls_dir: Path | None = None) -> dict[str, str]:
    """SP_PRIORITIZED_PROTOCOL and SP_<P>_<FIELD> for every field (PEM as file paths)."""
    env: dict[str, str] = {}
    if document.get("protocol"):
        env["SP_PRIORITIZED_PROTOCOL"] = str(document["protocol"])
    paths = pem_files(document, tls_dir)
    for protocol, values in (document.get("brokers") or {}).items():
        prefix = f"SP_{protocol.upper()}_"
        for field, value in values.items():
            if field in DERIVED:
                continue
            if field in PEM_FIELDS:
                if (protocol, field) in paths:
                    env[prefix + "TLS_" + PEM_FIELDS[field]] = paths[(protocol, field)]
                continue
            if isinstance(value, dict):        # a masked secret: the agent's token should reveal it
                raise CannotCarry("streampipes", protocol, field, "the console masked it: use the "
                                  "service's own token")
            if value is None:
                continue
            env[prefix + field.upper()] = _text(value)
    return env


def _refuse(fmt: str, protocol: str, values: dict, carried: set[str]) -> None:
    for field, value in values.items():
        if field in CONNECTION and field not in carried and is_set(field, value):
            raise CannotCarry(fmt, protocol, field)


def _userinfo(values: dict) -> str:
    user, password = values.get("username"), values.get("password")
    if not user:
        return ""
    info = urllib.parse.quote(str(user), safe="")
    if password:
        info += ":" + urllib.parse.quote(str(password), safe="")
    return info + "@"


def gateway(document: dict, tls_dir: Path | None = None) -> dict[str, str]:
    """KAFKA_BROKERS, NATS_SERVER_URL, RABBIT_SERVER_URL."""
    env: dict[str, str] = {}
    brokers = document.get("brokers") or {}
    for protocol in brokers:
        if protocol not in ("kafka", "nats", "rabbitmq"):
            raise CannotCarry("gateway", protocol, "*", "the gateway reads Kafka, NATS and RabbitMQ only")
    if "kafka" in brokers:
        k = brokers["kafka"]
        _refuse("gateway", "kafka", k, {"host", "port", "bootstrap_servers"})
        env["KAFKA_BROKERS"] = ",".join(k.get("nodes") or [])
    if "nats" in brokers:
        n = brokers["nats"]
        _refuse("gateway", "nats", n, {"host", "port", "servers", "username", "password", "token", "tls"})
        scheme = "tls" if n.get("tls_active") or n.get("tls") else "nats"
        info = _userinfo(n) or (urllib.parse.quote(str(n["token"]), safe="") + "@" if n.get("token") else "")
        env["NATS_SERVER_URL"] = ",".join(f"{scheme}://{info}{node}" for node in n.get("nodes") or [])
    if "rabbitmq" in brokers:
        r = brokers["rabbitmq"]
        _refuse("gateway", "rabbitmq", r, {"host", "port", "addresses", "vhost", "username", "password",
                                           "tls"})
        nodes = r.get("nodes") or []
        if len(nodes) > 1:
            raise CannotCarry("gateway", "rabbitmq", "addresses", "RABBIT_SERVER_URL holds one node")
        scheme = "amqps" if r.get("tls_active") or r.get("tls") else "amqp"
        vhost = urllib.parse.quote(str(r.get("vhost") or "/"), safe="")
        env["RABBIT_SERVER_URL"] = f"{scheme}://{_userinfo(r)}{nodes[0] if nodes else ''}/{vhost}"
    return env


def roboconf(document: dict, tls_dir: Path | None = None) -> str:
    """Karaf's etc/net.roboconf.messaging.rabbitmq.cfg."""
    brokers = document.get("brokers") or {}
    if "rabbitmq" not in brokers:
        raise CannotCarry("roboconf", ",".join(brokers) or "(none)", "*", "Roboconf reads RabbitMQ only")
    for protocol in brokers:
        if protocol != "rabbitmq":
            raise CannotCarry("roboconf", protocol, "*", "Roboconf reads RabbitMQ only")
    r = brokers["rabbitmq"]
    _refuse("roboconf", "rabbitmq", r, {"host", "port", "addresses", "username", "password"})
    nodes = r.get("nodes") or []
    if len(nodes) != 1:
        raise CannotCarry("roboconf", "rabbitmq", "addresses", "message-server-ip holds one node")
    node = nodes[0]
    ip = node[: -len(":5672")] if node.endswith(":5672") else node
    lines = ["# Written by console-agent from the Messaging Console; changes here are overwritten.",
             f"message-server-ip = {ip}",
             f"message-server-username = {r.get('username') or ''}",
             f"message-server-password = {r.get('password') or ''}", ""]
    return "\n".join(lines)


def _quote_env(value: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_./:,@%+=-]*", value):
        return value
    return "'" + value.replace("'", "'\\''") + "'"


def dotenv(document: dict, tls_dir: Path | None = None) -> str:
    """KEY=value lines of the streampipes names (quoted for sh and docker's --env-file alike when
    needed)."""
    return "".join(f"{k}={_quote_env(v)}\n" for k, v in sorted(streampipes(document, tls_dir).items()))


def as_json(document: dict, tls_dir: Path | None = None) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def template(document: dict, tls_dir: Path | None, text: str) -> str:
    """`text` with ${NAME} replaced: every streampipes name, and the gateway names of the protocols
    the gateway can carry. A name the document does not give is an error naming it."""
    names = dict(streampipes(document, tls_dir))
    brokers = document.get("brokers") or {}
    for protocol in ("kafka", "nats", "rabbitmq"):
        if protocol in brokers:
            try:
                names.update(gateway({"brokers": {protocol: brokers[protocol]}}, tls_dir))
            except CannotCarry:
                pass
    try:
        return string.Template(text).substitute(names)
    except KeyError as exc:
        raise CannotCarry("template", "", "", line=f"the template names ${{{exc.args[0]}}}, which the "
                          f"document does not give (names: SP_<PROTOCOL>_<FIELD>, KAFKA_BROKERS, "
                          f"NATS_SERVER_URL, RABBIT_SERVER_URL)") from None
    except ValueError as exc:
        raise CannotCarry("template", "", "", line=f"the template is not valid: {exc}") from None


def environment(fmt: str, document: dict, tls_dir: Path | None) -> dict[str, str]:
    if fmt == "streampipes":
        return streampipes(document, tls_dir)
    if fmt == "gateway":
        return gateway(document, tls_dir)
    raise ValueError(f"{fmt} is not an environment format")


def render(fmt: str, document: dict, tls_dir: Path | None, template_text: str = "") -> str:
    """The text of a file format (environment formats as dotenv-style lines)."""
    if fmt == "roboconf":
        return roboconf(document, tls_dir)
    if fmt == "dotenv":
        return dotenv(document, tls_dir)
    if fmt == "json":
        return as_json(document, tls_dir)
    if fmt == "template":
        return template(document, tls_dir, template_text)
    return "".join(f"{k}={_quote_env(v)}\n" for k, v in sorted(environment(fmt, document, tls_dir).items()))
