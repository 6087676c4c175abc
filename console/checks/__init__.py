"""Connection checks: from effective settings to a real check, its record, and the cached results
that /readyz, /metrics and the page read."""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from sqlalchemy import func, update

from ..brokers import PROTOCOLS, get_driver
from ..brokers.base import BrokerConfig, CheckResult
from ..extensions import db
from ..models import BrokerCheck, CheckLease, utcnow
from ..settings import service as settings_service
from ..settings.resolve import ProtocolSettings
from ..settings import identity
from ..settings.rules import kafka_security

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
        if settings.protocol == "kafka":
            options["security_protocol"] = kafka_security(settings)
        url = identity.pulsar_url(settings) if settings.protocol == "pulsar" else None
        options["oauth2_client_secret"] = settings.get("oauth2_client_secret")
        yield BrokerConfig(
            protocol=settings.protocol,
            host=addrs[0][0],
            port=addrs[0][1],
            servers=addrs if len(addrs) > 1 or settings.protocol == "kafka" else (),
            url=url,
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
    return sorted({info[4][0] for info in infos})


_dns_pool: list[ThreadPoolExecutor] = []
_dns_lock = threading.Lock()


def _resolver_pool() -> ThreadPoolExecutor:
    """The small pool DNS lookups run in (so that a slow resolver cannot outlive the deadline), made at
    first use, never at import."""
    with _dns_lock:
        if not _dns_pool:
            _dns_pool.append(ThreadPoolExecutor(max_workers=4, thread_name_prefix="console-dns"))
        return _dns_pool[0]


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
        future = _resolver_pool().submit(resolver, host, port)
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


def check_settings(settings: ProtocolSettings, timeout: float,
                   resolver: Resolver = system_resolver) -> CheckResult:
    """Run one real check for revealed effective settings: DNS first, then the protocol's driver."""
    started = time.monotonic()
    with broker_config(settings) as config:
        _, dns_error = resolve_hosts(config.addresses, timeout, resolver)
        if dns_error:
            return CheckResult(settings.protocol, "down", (time.monotonic() - started) * 1000,
                               "dns_failure", dns_error, {"target": target_of(config)})
        remaining = max(0.1, timeout - (time.monotonic() - started))
        result = get_driver(settings.protocol).check(config, remaining)
        result.identity.setdefault("target", target_of(config))
        return result


def run_checks(protocols: list[str] | None = None, timeout: float | None = None,
               settings: dict[str, ProtocolSettings] | None = None,
               resolver: Resolver = system_resolver) -> dict[str, CheckResult]:
    """Check several protocols concurrently (wall time ≈ the slowest one)."""
    from flask import current_app

    timeout = timeout or current_app.config["CHECK_TIMEOUT"]
    protocols = protocols or list(PROTOCOLS)
    resolved = settings or {p: settings_service.effective(p, reveal=True) for p in protocols}
    with ThreadPoolExecutor(max_workers=len(protocols), thread_name_prefix="console-check") as pool:
        futures = {p: pool.submit(check_settings, resolved[p], timeout, resolver) for p in protocols}
        return {p: f.result() for p, f in futures.items()}


def record(result: CheckResult, origin: str) -> BrokerCheck:
    """Store a check result and prune the protocol's old history."""
    row = BrokerCheck(protocol=result.protocol, status=result.status, latency_ms=result.latency_ms,
                      cause=result.cause, message=result.message[:2000],
                      identity=result.identity, target=str(result.identity.get("target", ""))[:255],
                      origin=origin, checked_at=result.checked_at)
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


def latest() -> dict[str, BrokerCheck]:
    """The newest stored result per protocol."""
    newest = (db.select(BrokerCheck.protocol, func.max(BrokerCheck.id).label("id"))
              .group_by(BrokerCheck.protocol).subquery())
    rows = db.session.execute(db.select(BrokerCheck).join(newest, BrokerCheck.id == newest.c.id))
    return {row.protocol: row for row in rows.scalars()}


def history(protocol: str, limit: int = 30) -> list[BrokerCheck]:
    """Recent results of one protocol, oldest first."""
    rows = db.session.execute(db.select(BrokerCheck).where(BrokerCheck.protocol == protocol)
                              .order_by(BrokerCheck.id.desc()).limit(limit)).scalars().all()
    return list(reversed(rows))


def claim(protocol: str, interval: float, holder: str, now: dt.datetime | None = None) -> bool:
    """Take the protocol's next background check if it is due; True for exactly one claimant per
    interval, across processes sharing the database."""
    now = now or utcnow()
    if db.session.get(CheckLease, protocol) is None:
        try:
            db.session.add(CheckLease(protocol=protocol, due_at=now, holder=None))
            db.session.commit()
        except Exception:  # noqa: BLE001 - another worker created it first
            db.session.rollback()
    outcome = db.session.execute(
        update(CheckLease)
        .where(CheckLease.protocol == protocol, CheckLease.due_at <= now)
        .values(due_at=now + dt.timedelta(seconds=interval), holder=holder)
        .execution_options(synchronize_session=False))
    db.session.commit()
    return outcome.rowcount == 1


def status_of(protocol: str, settings: ProtocolSettings, row: BrokerCheck | None,
              interval: float) -> dict[str, Any]:
    """The /readyz view of one protocol: disabled, unknown (no fresh result), up or down."""
    if not settings.enabled:
        return {"status": "disabled"}
    if row is None:
        return {"status": "unknown", "latency_ms": None, "cause": None, "checked_at": None}
    stale = (utcnow() - row.checked_at).total_seconds() > max(3 * interval, interval + 30)
    return {
        "status": "unknown" if stale else row.status,
        "latency_ms": None if row.latency_ms is None else round(row.latency_ms, 2),
        "cause": None if row.status == "up" else row.cause,
        "checked_at": row.checked_at.isoformat(),
        **({"stale": True} if stale else {}),
    }
