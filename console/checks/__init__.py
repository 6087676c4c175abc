"""Connection checks: from effective settings to a real check, its record, and the cached results
that /readyz, /metrics and the page read."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from typing import Any, Callable, Iterator, cast

from flask import current_app
from sqlalchemy import CursorResult, and_, func, or_, update

from ..brokers import PROTOCOLS, SPECS, driver_class, get_driver
from ..brokers.base import BrokerConfig, CheckResult
from ..brokers.nodes import addresses_of, check_nodes, node_name, warnings_for
from ..crypto import SecretUnreadable
from ..extensions import db
from ..messaging import effective as settings_read
from ..messaging import identity
from ..messaging.resolve import ProtocolSettings
from ..messaging.values import split_host_port
from ..models import BrokerCheck, CheckLease, utcnow

HISTORY_KEEP = 200
Resolver = Callable[[str, int], list[str]]


def _write(directory: str, name: str, text: str) -> str:
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


@contextmanager
def broker_config(settings: ProtocolSettings) -> Iterator[BrokerConfig]:
    """A BrokerConfig for revealed effective settings; TLS material lives in a private temporary
    directory for the duration of the block (client libraries want file paths)."""
    directory = tempfile.mkdtemp(prefix="console-tls-")
    try:
        files: dict[str, str | None] = {"tls_ca": None, "tls_cert": None, "tls_key": None}
        for name in files:
            value = settings.get(name)
            if not value:
                continue
            if isinstance(value, str):
                files[name] = _write(directory, f"{name}.pem", value)
            elif value.get("error"):
                continue
            elif value.get("certs_pem"):
                files[name] = _write(directory, f"{name}.pem", value["certs_pem"])
            elif value.get("key_pem"):
                files[name] = _write(directory, f"{name}.pem", value["key_pem"])
            elif value.get("path"):
                files[name] = value["path"]
        addrs = identity.addresses(settings)
        options = {k: v for k, v in settings.values().items()
                   if k not in ("password", "token", "oauth2_client_secret", "tls_key")}
        options.update(SPECS[settings.protocol].derived(settings))
        options["oauth2_client_secret"] = settings.get("oauth2_client_secret")
        yield BrokerConfig(
            protocol=settings.protocol,
            host=addrs[0][0],
            port=addrs[0][1],
            servers=addrs if len(addrs) > 1 or SPECS[settings.protocol].server_list else (),
            url=identity.url(settings),
            tls=identity.uses_tls(settings),
            tls_ca_file=files["tls_ca"],
            tls_cert_file=files["tls_cert"],
            tls_key_file=files["tls_key"],
            tls_verify_hostname=bool(settings.get("tls_verify_hostname", True)),
            username=settings.get("username") or None,
            password=settings.get("password") or None,
            token=settings.get("token") or None,
            options=options,
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def system_resolver(host: str, port: int) -> list[str]:
    """Addresses of `host` from the system resolver (one query, no retries)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


_DNS_POOL: ThreadPoolExecutor | None = None
_DNS_POOL_LOCK = threading.Lock()


def _dns_pool() -> ThreadPoolExecutor:
    """The small pool that runs resolver calls (created on first use, not at import)."""
    global _DNS_POOL
    with _DNS_POOL_LOCK:
        if _DNS_POOL is None:
            _DNS_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="console-dns")
        return _DNS_POOL


def resolve_hosts(addresses: tuple[tuple[str, int], ...], timeout: float,
                  resolver: Resolver = system_resolver) -> tuple[dict[str, list[str]], str | None]:
    """Resolve every configured host once, before any client library sees it.

    Returns ({host: [addresses]}, error message or None)."""
    out: dict[str, list[str]] = {}
    deadline = time.monotonic() + timeout
    for host, port in addresses:
        try:
            ipaddress.ip_address(host)
            out[host] = [host]
            continue
        except ValueError:
            pass
        future = _dns_pool().submit(resolver, host, port)
        try:
            out[host] = future.result(timeout=max(0.05, deadline - time.monotonic()))
        except FutureTimeout:
            return out, f"Resolving {host} took longer than {timeout:.1f} s."
        except (socket.gaierror, UnicodeError, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return out, f"{host} does not resolve: {reason}."
    return out, None


def target_of(config: BrokerConfig) -> str:
    """Where a check connects, for display."""
    if config.url:
        return config.url
    return ",".join(f"{h}:{p}" for h, p in config.addresses)


def _digest_value(value: Any) -> Any:
    """What of a resolved value a check depends on: TLS material by content, never its derived
    description (certificate status and days left change with the clock, not with the settings)."""
    if isinstance(value, dict):
        return {k: value.get(k) for k in ("certs_pem", "key_pem", "path", "error") if value.get(k)}
    return value


def settings_digest(settings: ProtocolSettings, key: bytes | str | None = None) -> str:
    """A keyed digest (HMAC-SHA256 with the console's secret key) of every effective value a check
    of revealed `settings` depends on; `enabled` is left out. Secrets are part of it, so a changed
    password is other settings, and the key keeps them from being guessed from the digest."""
    key = current_app.secret_key if key is None else key
    if isinstance(key, str):
        key = key.encode()
    body = {name: _digest_value(value) for name, value in settings.values().items()
            if name != "enabled"}
    text = json.dumps({"protocol": settings.protocol, "values": body}, sort_keys=True, default=str)
    return hmac.new(key or b"", text.encode(), hashlib.sha256).hexdigest()


UNREADABLE = "unreadable"   # the digest when a stored secret cannot be decrypted: nothing can check


def current_digest(protocol: str) -> str:
    """The settings digest of the protocol's current effective settings (UNREADABLE when a stored
    secret cannot be decrypted with the configured key)."""
    try:
        return settings_digest(settings_read.effective(protocol, reveal=True))
    except SecretUnreadable:
        return UNREADABLE


def current_digests(protocols: list[str] | None = None) -> dict[str, str]:
    """current_digest() of each protocol."""
    return {p: current_digest(p) for p in protocols or PROTOCOLS}


def check_settings(settings: ProtocolSettings, timeout: float,
                   resolver: Resolver = system_resolver, digest: str | None = None) -> CheckResult:
    """Run one real check for revealed effective settings: for every node (console.brokers.nodes), DNS
    first, then the protocol's driver. The result carries the digest of `settings` (given, when called
    outside an app context)."""
    digest = digest or settings_digest(settings)
    started = time.monotonic()
    missing = settings_read.unresolved(settings)
    if missing:             # named before any broker is contacted
        return CheckResult(settings.protocol, "down", None, "secret_unavailable",
                           "; ".join(f"{name}: {why}" for name, why in missing),
                           settings_digest=digest)
    with broker_config(settings) as config:
        resolve = memoized(resolver)
        nodes = each_address(config, timeout, resolve)
        left = max(0.1, timeout - (time.monotonic() - started))
        result = check_nodes(nodes, left, partial(_check_node, resolver=resolve))
        result.identity.setdefault("target", target_of(config))
        result.settings_digest = digest
        return result


def each_address(config: BrokerConfig, timeout: float, resolver: Resolver) -> BrokerConfig:
    """`config` with every configured host name that resolves to several addresses replaced by those
    addresses, each a node of its own (console.brokers.nodes), whose TLS still verifies the name
    (`BrokerConfig.server_names`); `config` itself when no name has several addresses, or when TLS goes
    through a client library that cannot verify a name apart from the address it connects to. A name that
    does not resolve stays as it is: its node's check names the DNS failure."""
    if config.tls and not driver_class(config.protocol).tls_by_address:
        return config
    configured = addresses_of(config)
    resolved, _ = resolve_hosts(tuple(dict.fromkeys(configured)), timeout, resolver)
    nodes: list[tuple[str, int]] = []
    names: dict[str, str] = {}
    for host, port in configured:
        found = resolved.get(host) or [host]
        if len(found) < 2:
            nodes.append((host, port))
            continue
        for address in found:
            nodes.append((address, port))
            names[address] = host
    if not names:
        return config
    nodes = list(dict.fromkeys(nodes))
    url = config.url
    if url:
        url = f"{url.split('://', 1)[0]}://" + ",".join(node_name(h, p) for h, p in nodes)
    return replace(config, host=nodes[0][0], port=nodes[0][1], servers=tuple(nodes), url=url,
                   server_names=names)


def _check_node(config: BrokerConfig, timeout: float, *, resolver: Resolver) -> CheckResult:
    """DNS, then the driver's check, of one node."""
    started = time.monotonic()
    _, dns_error = resolve_hosts(config.addresses, timeout, resolver)
    if dns_error:
        return CheckResult(config.protocol, "down", (time.monotonic() - started) * 1000, "dns_failure",
                           dns_error, {"target": target_of(config)})
    remaining = max(0.1, timeout - (time.monotonic() - started))
    return get_driver(config.protocol).check(config, remaining)


def memoized(resolver: Resolver) -> Resolver:
    """`resolver` asked once per host: the nodes of one check or diagnosis share its answers (a node
    asking while another's lookup of that host runs waits for it)."""
    answers: dict[str, tuple[threading.Event, list[Any]]] = {}
    lock = threading.Lock()

    def resolve(host: str, port: int) -> list[str]:
        with lock:
            known = answers.get(host)
            first = known is None
            if known is None:
                known = answers[host] = (threading.Event(), [])
        ready, box = known
        if first:
            try:
                box.append(("ok", resolver(host, port)))
            except BaseException as exc:  # noqa: BLE001 - handed to every node of that host
                box.append(("error", exc))
            finally:
                ready.set()
        else:
            ready.wait()
        kind, value = box[0]
        if kind == "error":
            raise value
        return value

    return resolve


def run_checks(protocols: list[str] | None = None, timeout: float | None = None,
               settings: dict[str, ProtocolSettings] | None = None,
               resolver: Resolver = system_resolver) -> dict[str, CheckResult]:
    """Check several protocols concurrently (wall time ≈ the slowest one)."""
    timeout = timeout or current_app.config["CHECK_TIMEOUT"]
    protocols = protocols or list(PROTOCOLS)
    resolved = settings or {p: settings_read.effective(p, reveal=True) for p in protocols}
    digests = {p: settings_digest(resolved[p]) for p in protocols}
    with ThreadPoolExecutor(max_workers=len(protocols), thread_name_prefix="console-check") as pool:
        futures = {p: pool.submit(check_settings, resolved[p], timeout, resolver, digests[p])
                   for p in protocols}
        return {p: f.result() for p, f in futures.items()}


def record(result: CheckResult, origin: str) -> BrokerCheck:
    """Store a check result (with the digest of the settings it was made with) and prune the
    protocol's old history."""
    row = BrokerCheck(protocol=result.protocol, status=result.status, latency_ms=result.latency_ms,
                      cause=result.cause, message=result.message[:2000],
                      identity=result.identity, target=str(result.identity.get("target", ""))[:255],
                      origin=origin, checked_at=result.checked_at,
                      settings_digest=result.settings_digest, nodes=result.nodes or None)
    db.session.add(row)
    db.session.commit()
    cutoff = db.session.execute(
        db.select(BrokerCheck.id).where(BrokerCheck.protocol == result.protocol)
        .order_by(BrokerCheck.id.desc()).offset(HISTORY_KEEP).limit(1)).scalar_one_or_none()
    if cutoff is not None:
        db.session.execute(db.delete(BrokerCheck).where(BrokerCheck.protocol == result.protocol,
                                                        BrokerCheck.id <= cutoff))
        db.session.commit()
    return row


def _newest(condition: Any) -> dict[str, BrokerCheck]:
    newest = (db.select(BrokerCheck.protocol, func.max(BrokerCheck.id).label("id"))
              .where(condition).group_by(BrokerCheck.protocol).subquery())
    rows = db.session.execute(db.select(BrokerCheck).join(newest, BrokerCheck.id == newest.c.id))
    return {row.protocol: row for row in rows.scalars()}


def latest(digests: dict[str, str] | None = None) -> dict[str, BrokerCheck]:
    """The newest stored result per protocol; with `digests`, the newest one made with those
    settings where there is one (a test of values never saved does not hide it), else the newest."""
    rows = _newest(BrokerCheck.protocol.in_(PROTOCOLS))
    if digests:
        matching = _newest(or_(*(and_(BrokerCheck.protocol == p, BrokerCheck.settings_digest == d)
                                 for p, d in digests.items())))
        rows.update(matching)
    return rows


def history(protocol: str, limit: int = 30, digest: str | None = None) -> list[BrokerCheck]:
    """Recent results of one protocol (only those made with settings `digest`, when given),
    oldest first."""
    query = db.select(BrokerCheck).where(BrokerCheck.protocol == protocol)
    if digest is not None:
        query = query.where(BrokerCheck.settings_digest == digest)
    rows = db.session.execute(query.order_by(BrokerCheck.id.desc()).limit(limit)).scalars().all()
    return list(reversed(rows))


def claim(protocol: str, interval: float, holder: str, now: dt.datetime | None = None,
          digest: str | None = None) -> bool:
    """Take the protocol's next background check if it is due — or, with `digest`, at once when the
    last claimed check was made with other settings; True for exactly one claimant, across
    processes sharing the database."""
    now = now or utcnow()
    if db.session.get(CheckLease, protocol) is None:
        try:
            db.session.add(CheckLease(protocol=protocol, due_at=now, holder=None))
            db.session.commit()
        except Exception:  # noqa: BLE001 - another worker created it first
            db.session.rollback()
    due = CheckLease.due_at <= now
    values: dict[str, Any] = {"due_at": now + dt.timedelta(seconds=interval), "holder": holder}
    if digest is not None:
        due = or_(due, CheckLease.settings_digest.is_(None), CheckLease.settings_digest != digest)
        values["settings_digest"] = digest
    outcome = db.session.execute(
        update(CheckLease).where(CheckLease.protocol == protocol, due).values(**values)
        .execution_options(synchronize_session=False))
    db.session.commit()
    return cast("CursorResult[Any]", outcome).rowcount == 1


def status_of(protocol: str, settings: ProtocolSettings, row: BrokerCheck | None,
              interval: float, digest: str | None = None) -> dict[str, Any]:
    """The /readyz view of one protocol: disabled, unknown (no fresh result, or — with `digest`,
    the current settings' — only a result made with other settings: `rechecking`), up or down."""
    if not settings.enabled:
        return {"status": "disabled"}
    if digest == UNREADABLE:
        return {"status": "unknown", "latency_ms": None, "cause": "secret_unreadable",
                "checked_at": None}
    if row is None:
        return {"status": "unknown", "latency_ms": None, "cause": None, "checked_at": None}
    if digest is not None and row.settings_digest != digest:
        return {"status": "unknown", "rechecking": True, "latency_ms": None, "cause": None,
                "checked_at": None, "previous_checked_at": row.checked_at.isoformat()}
    stale = (utcnow() - row.checked_at).total_seconds() > max(3 * interval, interval + 30)
    return {
        "status": "unknown" if stale else row.status,
        "latency_ms": None if row.latency_ms is None else round(row.latency_ms, 2),
        "cause": None if row.status == "up" else row.cause,
        "checked_at": row.checked_at.isoformat(),
        **({"stale": True} if stale else {}),
        **node_status(row.status, row.nodes),
    }


def node_status(status: str, nodes: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The per-node part of a status: every node (name, status, cause), how many are up, and a
    `node_unreachable` warning per failed node while the protocol is up."""
    if not nodes:
        return {}
    listed = [{k: n.get(k) for k in ("node", "status", "cause", "advertised") if n.get(k) is not None}
              for n in nodes]
    out: dict[str, Any] = {"nodes": listed, "nodes_up": sum(1 for n in nodes if n.get("status") == "up")}
    if status == "up" and len(nodes) > 1:
        out["warnings"] = warnings_for(
            {"node": n.get("node"), "status": n.get("status"), "cause": n.get("cause"),
             "message": n.get("message") or ""} for n in nodes)
    return out


def current_statuses(protocols: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """status_of() of every protocol against its current settings (page, API, /readyz)."""
    protocols = protocols or list(PROTOCOLS)
    interval = current_app.config["CHECK_INTERVAL"]
    digests = current_digests(protocols)
    rows = latest(digests)
    return {p: status_of(p, settings_read.effective(p), rows.get(p), interval, digests[p])
            for p in protocols}


IDENTITY_LABELS = {"cluster_id": "cluster", "cluster_name": "cluster", "cluster": "cluster",
                   "controller": "controller", "controller_id": None, "server_name": "server",
                   "server_id": None, "product": None, "version": "version", "vhost": "vhost",
                   "rtt_ms": "round trip", "partitions": "partitions"}


def describe_identity(identity: dict[str, Any]) -> list[str]:
    """What a check learnt about the broker, as short phrases an operator reads as they are
    ("TLS off", "RabbitMQ 3.10.8", "3 brokers"); the target is left out."""
    out: list[str] = []
    product = identity.get("product")
    if product:
        out.append(f"{product} {identity.get('version') or ''}".strip())
    for key, value in identity.items():
        if key in ("target", "tls", "product") or value in (None, "") or (
                key == "version" and product):
            continue
        if isinstance(value, (list, tuple)):
            out.append(f"{IDENTITY_LABELS.get(key, key.replace('_', ' '))} {', '.join(map(str, value))}")
        elif key == "brokers" and isinstance(value, int):
            out.append(f"{value} broker{'s' if value != 1 else ''}")
        elif key == "rtt_ms":
            out.append(f"round trip {value} ms")
        elif key in IDENTITY_LABELS and IDENTITY_LABELS[key] is None:
            continue
        elif isinstance(value, bool):
            out.append(f"{IDENTITY_LABELS.get(key, key.replace('_', ' '))} {'yes' if value else 'no'}")
        else:
            out.append(f"{IDENTITY_LABELS.get(key, key.replace('_', ' '))} {value}")
    if "tls" in identity:
        out.append("TLS on" if identity["tls"] else "TLS off")
    return out


def _endpoints(address: str) -> tuple[str, tuple[tuple[str, int], ...]] | None:
    """(scheme, ((host, port), …)) of an address label (a host:port list or a URL), or None."""
    scheme, _, rest = address.rpartition("://")
    try:
        return scheme, tuple(split_host_port(part.strip()) for part in rest.split(",") if part.strip())
    except (ValueError, TypeError):
        return None


def same_endpoints(old: str | None, new: str | None, timeout: float = 1.0,
                   resolver: Resolver = system_resolver) -> bool:
    """Whether two address labels reach the same brokers: the same scheme and ports, and host names
    that resolve to a common address (`127.0.0.1:1883` and `localhost:1883`)."""
    if old == new:
        return True
    a, b = _endpoints(old or ""), _endpoints(new or "")
    if a is None or b is None or a[0] != b[0] or len(a[1]) != len(b[1]):
        return False
    if sorted(port for _, port in a[1]) != sorted(port for _, port in b[1]):
        return False
    found, error = resolve_hosts(tuple(set(a[1]) | set(b[1])), timeout, resolver)
    if error:
        return False

    def covered(these: tuple[tuple[str, int], ...], those: tuple[tuple[str, int], ...]) -> bool:
        return all(any(port == p and set(found.get(host, [])) & set(found.get(h, []))
                       for h, p in those) for host, port in these)

    return covered(a[1], b[1]) and covered(b[1], a[1])
