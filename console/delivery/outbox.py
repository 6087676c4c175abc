"""The outbox of callbacks to services.

`refresh()` runs inside the transaction of every committed change (and at registration and start-up):
it recomputes each service's document, and where the ETag changed it records the new target version
and, for a service with a callback URL, writes a delivery row — superseding any older one still
waiting. Any replica's worker claims due rows with one conditional UPDATE (so exactly one sends each),
POSTs `{service, version, etag}` with an HMAC signature, and on failure retries with exponential
backoff up to a limit; the rows survive restarts.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.client
import json
import logging
import os
import random
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

from flask import Flask, current_app
from sqlalchemy import insert, or_, update
from sqlalchemy.orm.attributes import set_committed_value

from .. import database, signals
from ..crypto import decrypt
from ..extensions import db
from ..messaging.effective import Snapshot
from ..models import ConfigVersion, Delivery, ExtensionService, utcnow
from . import documents, plans

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Console-Signature"
_wake = threading.Event()


def sign(secret: str, body: bytes) -> str:
    """The signature header value of `body`: sha256=<hex HMAC-SHA256 with the signing secret>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def current_version() -> int:
    """The newest configuration version (0 before the first change)."""
    return db.session.execute(db.select(db.func.max(ConfigVersion.id))).scalar() or 0


def refresh(snapshot: Snapshot, version: int | None = None,
            services: Iterable[ExtensionService] | None = None, *,
            announce_first: bool = False) -> list[ExtensionService]:
    """Record each service's new target where its document changed and queue its callback (in the
    caller's transaction); the services whose document changed. A service's very first document is
    not announced unless `announce_first`: it fetches it itself after registering.

    Set-based: services that share a document share its ETag, so one UPDATE records the new target
    of every service that moves from the same old ETag to the same new one, and one UPDATE and one
    INSERT queue their callbacks — a change costs the same statements for 20 services or 2,000."""
    db.session.flush()
    version = current_version() if version is None else version
    rows = list(services) if services is not None else list(
        db.session.execute(db.select(ExtensionService)).scalars())
    moves: dict[tuple[str | None, str, int], list[ExtensionService]] = {}
    rollout = plans.active()
    for row in rows:
        served, served_version = plans.snapshot_for(row, snapshot, version, rollout, look=False)
        etag = documents.etag_for(served, row)
        if etag != row.config_etag:
            moves.setdefault((row.config_etag, etag, served_version or version), []).append(row)
    changed: list[ExtensionService] = []
    announce: dict[int, list[ExtensionService]] = {}
    for (old, etag, version), group in moves.items():
        claimed = set(db.session.execute(
            update(ExtensionService)
            .where(ExtensionService.id.in_([row.id for row in group]),
                   ExtensionService.config_etag.is_(None) if old is None
                   else ExtensionService.config_etag == old)
            .values(config_etag=etag, config_version=version)
            .returning(ExtensionService.id)
            .execution_options(synchronize_session=False)).scalars())
        for row in group:
            if row.id not in claimed:      # another process recorded this change first
                db.session.refresh(row)
                continue
            set_committed_value(row, "config_etag", etag)
            set_committed_value(row, "config_version", version)
            changed.append(row)
            if row.callback_url and (announce_first or old is not None):
                announce.setdefault(version, []).append(row)
    for version, group in announce.items():
        enqueue_all(group, version)
    return changed


def enqueue_all(services: list[ExtensionService], version: int) -> None:
    """Queue a callback to each of `services` (their new ETag recorded), superseding the ones still
    waiting (one being sent right now is left to finish): two statements for any number."""
    if not services:
        return
    db.session.flush()
    now = utcnow()
    db.session.execute(update(Delivery).where(Delivery.service_id.in_([s.id for s in services]),
                                              Delivery.state == "pending",
                                              or_(Delivery.claimed_until.is_(None),
                                                  Delivery.claimed_until < now))
                       .values(state="superseded", finished_at=now, claimed_until=None)
                       .execution_options(synchronize_session=False))
    db.session.execute(insert(Delivery), [
        {"service_id": s.id, "version": version, "etag": s.config_etag, "url": s.callback_url,
         "state": "pending", "attempts": 0, "due_at": now} for s in services])


def notified(before: Snapshot, after: Snapshot,
             services: Iterable[ExtensionService]) -> list[dict[str, Any]]:
    """The services a change from `before` to `after` notifies, with the protocol each will use."""
    out = []
    for row in services:
        if documents.etag_for(after, row) != documents.etag_for(before, row):
            out.append({"service": row.name,
                        "protocol": documents.content(after, row, reveal=True)["protocol"],
                        "callback": bool(row.callback_url)})
    return out


def wake() -> None:
    """Tell this process's delivery worker that something was queued."""
    _wake.set()


@dataclass
class Attempt:
    """What one POST to a callback URL gave."""

    ok: bool
    error: str = ""


def post(url: str, body: bytes, signature: str, timeout: float) -> Attempt:
    """POST `body` to `url` once: http(s) only, no redirects followed, the answer's body unread."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return Attempt(False, f"Not an http(s) URL: {url}")
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname, parts.port, timeout=timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("POST", path, body=body, headers={
            "Content-Type": "application/json", SIGNATURE_HEADER: signature,
            "User-Agent": "messaging-console"})
        response = conn.getresponse()
        status = response.status
    except (OSError, http.client.HTTPException) as exc:
        reason = "timed out" if isinstance(exc, (socket.timeout, TimeoutError)) else (
            str(exc) or type(exc).__name__)
        return Attempt(False, f"{reason} ({parts.hostname}:{parts.port or ''})".replace(":)", ")"))
    finally:
        conn.close()
    if 200 <= status < 300:
        return Attempt(True)
    if 300 <= status < 400:
        return Attempt(False, f"Answered {status} (redirect, not followed)")
    return Attempt(False, f"Answered {status}")


def _config(name: str, default: float) -> float:
    try:
        return float(current_app.config.get(name, default))
    except (TypeError, ValueError):
        return default


def backoff(attempts: int) -> float:
    """Seconds before retry number `attempts` (1, 2, …): exponential with jitter, capped."""
    base = _config("DELIVERY_RETRY_BASE", 1.0)
    cap = _config("DELIVERY_RETRY_MAX", 300.0)
    return min(cap, base * 2 ** (attempts - 1)) * random.uniform(0.8, 1.0)


def claim(limit: int = 500) -> tuple[str, list[Delivery]]:
    """Claim due deliveries for this process: one conditional UPDATE, so no two replicas get one."""
    now = utcnow()
    token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"[:80]
    lease = dt.timedelta(seconds=_config("DELIVERY_LEASE_SECONDS", 30.0))
    due = [i for (i,) in db.session.execute(
        db.select(Delivery.id).where(Delivery.state == "pending", Delivery.due_at <= now,
                                     or_(Delivery.claimed_until.is_(None),
                                         Delivery.claimed_until < now))
        .order_by(Delivery.due_at).limit(limit))]
    if not due:
        db.session.rollback()
        return token, []
    db.session.execute(update(Delivery).where(
        Delivery.id.in_(due), Delivery.state == "pending",
        or_(Delivery.claimed_until.is_(None), Delivery.claimed_until < now))
        .values(claimed_by=token, claimed_until=now + lease)
        .execution_options(synchronize_session=False))
    db.session.commit()
    rows = list(db.session.execute(db.select(Delivery).where(Delivery.claimed_by == token,
                                                             Delivery.state == "pending")).scalars())
    return token, rows


def _payload(item: Delivery, service: ExtensionService) -> tuple[bytes, str]:
    body = json.dumps({"service": service.name, "version": item.version, "etag": item.etag},
                      separators=(",", ":")).encode()
    return body, sign(decrypt(service.signing_secret) if service.signing_secret else "", body)


def finish(token: str, item_id: int, attempt: Attempt) -> None:
    """Record the result of one attempt on a claimed delivery."""
    finish_all(token, [(item_id, attempt)])


def finish_all(token: str, results: list[tuple[int, Attempt]]) -> None:
    """Record the results of attempts on claimed deliveries, in one transaction."""
    items = {d.id: d for d in db.session.execute(db.select(Delivery).where(
        Delivery.id.in_([i for i, _ in results]))).scalars()}
    now = utcnow()
    limit = int(_config("DELIVERY_MAX_ATTEMPTS", 10))
    for item_id, attempt in results:
        item = items.get(item_id)
        if item is None or item.claimed_by != token or item.state != "pending":
            continue
        item.attempts += 1
        item.claimed_until = None
        if attempt.ok:
            item.state, item.finished_at, item.last_error = "delivered", now, None
        else:
            item.last_error = attempt.error[:1000]
            if item.attempts >= limit:
                item.state, item.finished_at = "failed", now
            else:
                item.due_at = now + dt.timedelta(seconds=backoff(item.attempts))
    db.session.commit()


def deliver_due(pool: ThreadPoolExecutor | None = None) -> int:
    """Send every due delivery once (concurrently on `pool`); how many were attempted."""
    token, items = claim()
    if not items:
        return 0
    timeout = _config("DELIVERY_TIMEOUT", 3.0)
    services = {s.id: s for s in db.session.execute(db.select(ExtensionService).where(
        ExtensionService.id.in_({i.service_id for i in items}))).scalars()}
    jobs = []
    for item in items:
        body, signature = _payload(item, services[item.service_id])
        jobs.append((item.id, item.url, body, signature))
    db.session.rollback()
    if pool is None:
        results = [(i, post(url, body, sig, timeout)) for i, url, body, sig in jobs]
    else:
        futures = [(i, pool.submit(post, url, body, sig, timeout)) for i, url, body, sig in jobs]
        results = [(i, f.result()) for i, f in futures]
    finish_all(token, results)
    return len(results)


_ROUND: list[Callable[[], Any]] = []


def every_round(job: Callable[[], Any]) -> None:
    """Run `job` (in an app context) on every round of the delivery worker, after the callbacks:
    the roll-outs' deadlines are checked so."""
    if job not in _ROUND:
        _ROUND.append(job)


class Worker:
    """Delivers the outbox in the background of a serving process."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(
            max_workers=int(app.config.get("DELIVERY_CONCURRENCY", 8) or 8),
            thread_name_prefix="console-delivery")
        self._thread = threading.Thread(target=self._loop, name="console-delivery", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        _wake.set()
        self._thread.join(5)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _loop(self) -> None:
        poll = float(self.app.config.get("DELIVERY_POLL_SECONDS", 1.0))
        while not self._stop.is_set():
            sent = 0
            try:
                with self.app.app_context():
                    sent = deliver_due(self._pool)
                    for job in _ROUND:
                        job()
            except database.UNREACHABLE as exc:     # one line per outage; try again next round
                database.outage(self.app).failed(exc)
            except Exception:  # noqa: BLE001 - the worker must survive anything
                log.exception("Delivering callbacks failed; retrying")
            else:
                database.outage(self.app).recovered()
            if not sent:
                _wake.wait(poll)
                _wake.clear()


def start(app: Flask) -> Worker | None:
    """Start the delivery worker of a serving process unless CONSOLE_DELIVERY_WORKER is false."""
    enabled = str(app.config.get("DELIVERY_WORKER", "true")).lower() not in (
        "0", "false", "no", "off")
    if not enabled or "console_delivery" in app.extensions:
        return None
    worker = Worker(app)
    app.extensions["console_delivery"] = worker
    worker.start()
    return worker


def init_app(app: Any) -> None:
    """Queue and wake callbacks on every configuration version the change pipeline announces."""
    signals.version_written.connect(_on_version_written, weak=False)
    signals.version_committed.connect(_on_version_committed, weak=False)


def _on_version_written(sender: Any, *, snapshot: Snapshot, version: int | None, **_: Any) -> None:
    refresh(snapshot, version)


def _on_version_committed(sender: Any, **_: Any) -> None:
    wake()
