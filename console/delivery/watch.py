"""Held watches of a service's configuration (CONTRACT § Watching a service's configuration).

A watch waits on the process's `Hub` for a change:
- committed by this process: the change pipeline's `version_committed` signal, and a session event
  for a service registered, changed or deleted, wake it at once;
- committed by another process or replica: on PostgreSQL the committing transaction sends
  `NOTIFY console_watch` and one listener per process (`LISTEN`, running while watches are held) wakes
  the watches within milliseconds; on SQLite (one host) a poller reads a fingerprint of the delivery
  state every `CONSOLE_WATCH_POLL_SECONDS`.
A woken watch compares its own service's ETag and goes back to waiting when its document did not
change. Under the asynchronous server (console/serving.py) the watches hold no thread: they are
answered together by `answer` — one query to compare the ETags of all of them, and for those whose
document changed one snapshot, each shared document built once, one commit. Shutting down (`close`)
ends every watch within a second.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, has_app_context
from sqlalchemy import event, func, inspect, select, text
from sqlalchemy.orm import Session

from .. import signals
from ..extensions import db
from ..messaging.effective import current
from ..models import ConfigVersion, ExtensionService, Rollout
from . import documents, fetch
from . import status as rollout

log = logging.getLogger(__name__)

SLICE = 1.0        # longest single wait: a closing process answers its watches within a second
CHANNEL = "console_watch"
SCOPE_KEY = "console.watch"      # what console/serving.py puts in the ASGI scope of a watch
NOW = "now"                      # … when the held watch ended and the view answers it as it stands


class Hub:
    """Where the watches of one process wait for a change."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._cond = threading.Condition()
        self.generation = 0
        self.closing = False
        self.held = 0
        self._poller: threading.Thread | None = None
        self._wakers: list[Callable[[], None]] = []

    def notify(self) -> None:
        with self._cond:
            self.generation += 1
            self._cond.notify_all()
            wakers = list(self._wakers)
        for wake in wakers:
            wake()

    def close(self) -> None:
        with self._cond:
            self.closing = True
        self.notify()

    def subscribe(self, wake: Callable[[], None]) -> None:
        """Call `wake` (from any thread) on every change: the asynchronous server's one waker."""
        with self._cond:
            self._wakers.append(wake)

    def wait(self, generation: int, timeout: float) -> int:
        """Wait until the generation moves past `generation`, the hub closes or `timeout` passes."""
        with self._cond:
            self._cond.wait_for(lambda: self.generation != generation or self.closing,
                                min(timeout, SLICE))
            return self.generation

    def hold(self) -> None:
        with self._cond:
            self.held += 1
            if self._poller is None or not self._poller.is_alive():
                self._poller = threading.Thread(target=self._watch_database, name="watch-listener",
                                                daemon=True)
                self._poller.start()

    def release(self) -> None:
        with self._cond:
            self.held -= 1

    def _idle(self) -> bool:
        with self._cond:
            if self.held <= 0 or self.closing:
                self._poller = None
                return True
            return False

    def _watch_database(self) -> None:
        """Wake the watches when another process committed a change; ends when none is held. A
        change may have been committed between a watch's read and this thread's start, so every
        watch looks once more as soon as the thread listens."""
        with self.app.app_context():
            engine = db.engine
        while not self._idle():
            try:
                if engine.dialect.name == "postgresql":
                    self._listen(engine)
                else:
                    self._poll()
            except Exception as exc:  # noqa: BLE001 - a database outage: the watches wait on
                log.warning("watch: cannot follow the delivery state: %s", exc)
                time.sleep(1.0)

    def _listen(self, engine: Any) -> None:
        conn = engine.raw_connection()
        try:
            pg = conn.driver_connection
            pg.rollback()
            pg.autocommit = True
            pg.execute(f"LISTEN {CHANNEL}")
            self.notify()
            while not self._idle():
                for _ in pg.notifies(timeout=SLICE):
                    self.notify()
        finally:
            conn.invalidate()        # never back to the pool in LISTEN and autocommit

    def _poll(self) -> None:
        seen: Any = None
        every = float(self.app.config.get("WATCH_POLL_SECONDS", 0.5))
        while not self._idle():
            with self.app.app_context():
                now = db.session.execute(select(
                    select(func.max(ConfigVersion.id)).scalar_subquery(),
                    select(func.max(ExtensionService.updated_at)).scalar_subquery())).one()
                db.session.remove()
            if now != seen:
                self.notify()
            seen = now
            time.sleep(every)


def hub(app: Flask) -> Hub:
    found = app.extensions.get("console_watch")
    if found is None:
        found = app.extensions.setdefault("console_watch", Hub(app))
    return found


DIAGNOSE_HEADER = "Console-Diagnose"            # on configuration answers while a diagnosis is asked for
DIAGNOSE_SEEN_HEADER = "Console-Diagnose-Seen"  # sent by the agent: the request it already runs


def diagnosis_wakes(request_id: str | None, seen: str | None) -> bool:
    """Whether a watch ends (or is not held) for a pending diagnosis request (delivery/diagnosis.py):
    one the service's agent is not running already."""
    return bool(request_id) and request_id != (seen or "").strip()


def deadline(wait: int) -> float:
    """When a watch of `wait` seconds ends: plus up to wait/16 of jitter, so that watchers spread."""
    return time.monotonic() + wait + random.uniform(0, wait / 16)


def deferred(environ: dict[str, Any]) -> dict[str, Any] | None:
    """Under the asynchronous server, the dict a view fills to have its watch held there."""
    found = (environ.get("asgi.scope") or {}).get(SCOPE_KEY)
    return found if isinstance(found, dict) else None


def answer_now(environ: dict[str, Any]) -> bool:
    """Whether the asynchronous server's held watch ended and the view answers it as it stands."""
    return (environ.get("asgi.scope") or {}).get(SCOPE_KEY) == NOW


def answer(app: Flask, holds: list[dict[str, Any]]) -> list[tuple[int, str, bytes] | None]:
    """For each held watch (the dicts views filled): None while its document is the one it holds;
    else the answer — (200, ETag, body) — or (404, "", b"") when its service is gone, or (0, "", b"")
    when a diagnosis was asked of it (the view answers it as it stands). One query
    compares them all; the changed ones share one snapshot and one commit."""
    out: list[tuple[int, str, bytes] | None] = [None] * len(holds)
    with app.app_context():
        try:
            names = sorted({h["name"] for h in holds})
            found = db.session.execute(select(ExtensionService.name, ExtensionService.config_etag,
                                              ExtensionService.diagnosis_request)
                                       .where(ExtensionService.name.in_(names))).tuples().all()
            tags = {name: tag for name, tag, _ in found}
            asked = {name: request for name, _, request in found}
            for i, h in enumerate(holds):     # a diagnosis asked for: the view answers 304 and says so
                if h["own"] and h["name"] in tags and diagnosis_wakes(asked[h["name"]], h.get("seen")):
                    out[i] = (0, "", b"")
            changed = [i for i, h in enumerate(holds) if out[i] is None and (
                h["name"] not in tags or not rollout.etag_matches(
                    h["header"], (tags[h["name"]] or "") + ("" if h["own"] else documents.MASKED_SUFFIX)))]
            if not changed:
                return out
            rows = {r.name: r for r in db.session.execute(select(ExtensionService).where(
                ExtensionService.name.in_({holds[i]["name"] for i in changed}))).scalars()}
            snapshot = current()
            made: dict[tuple[str, bool], tuple[int, str, bytes]] = {}    # watchers of one service
            for i in changed:
                h = holds[i]
                row = rows.get(h["name"])
                if row is None:
                    out[i] = (404, "", b"")
                    continue
                key = (row.name, bool(h["own"]))
                if key not in made:
                    tag, body = fetch.document(snapshot, row, h["own"])
                    if h["own"]:      # one record and one audited read per service and version
                        fetch.record(row, body, actor=h["actor"], remote=h["remote"], watched=True)
                    made[key] = (200, tag, (app.json.dumps(body) + "\n").encode())
                out[i] = made[key]
            db.session.commit()
            return out
        finally:
            db.session.remove()


def changed(session: Session | None = None) -> None:
    """Say that the open transaction changes what services are served (for writers that do it with
    set-based statements): their watches are woken when it commits."""
    (session or db.session()).info.setdefault("watch", set()).add("service")


def _serves_differently(session: Session) -> set[str]:
    found: set[str] = set()
    for obj in session.new:
        if isinstance(obj, ConfigVersion):
            found.add("version")
    for obj in list(session.new) + list(session.deleted):
        if isinstance(obj, ExtensionService):
            found.add("service")
    for obj in list(session.new) + list(session.dirty):
        if isinstance(obj, Rollout):        # a roll-out released, halted or rolled back
            found.add("service")
    for obj in session.dirty:
        if isinstance(obj, ExtensionService) and inspect(obj).attrs.protocols.history.has_changes():
            found.add("service")
    return found


def _after_flush(session: Session, _context: Any) -> None:
    found = _serves_differently(session) | session.info.get("watch", set())
    if not found:
        return
    session.info["watch"] = found
    if session.get_bind().dialect.name == "postgresql" and not session.info.get("watch_sent"):
        session.connection().execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})
        session.info["watch_sent"] = True


def _on_execute(state: Any) -> None:
    """A roll-out moved by a set-based UPDATE (plans.set_state): the held services' documents move."""
    mapper = state.bind_mapper
    if (state.is_update or state.is_delete) and mapper is not None and mapper.class_ is Rollout:
        state.session.info.setdefault("watch", set()).add("service")


def _after_commit(session: Session) -> None:
    found = session.info.pop("watch", set())
    session.info.pop("watch_sent", None)
    if "service" in found and has_app_context():     # versions: version_committed wakes them
        hub(current_app._get_current_object()).notify()  # type: ignore[attr-defined]


def _after_rollback(session: Session) -> None:
    session.info.pop("watch", None)
    session.info.pop("watch_sent", None)


_LISTENING: list[bool] = []


def _woken(sender: Any, **_: Any) -> None:
    """A version committed by this process: wake the watches of the app that committed it."""
    found = sender.extensions.get("console_watch") if isinstance(sender, Flask) else None
    if found is not None:
        found.notify()


def init_app(app: Flask) -> None:
    """Wake this process's watches on every version it commits; have committing transactions tell
    the other processes (PostgreSQL NOTIFY)."""
    if not _LISTENING:
        _LISTENING.append(True)
        signals.version_committed.connect(_woken)
        signals.rollout_released.connect(_woken)       # the held services' documents moved
        event.listen(Session, "after_flush", _after_flush)
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "do_orm_execute", _on_execute)
        event.listen(Session, "after_rollback", _after_rollback)


def close(app: Flask) -> None:
    """End every watch this process holds (at shutdown)."""
    found = app.extensions.get("console_watch")
    if found is not None:
        found.close()

