"""A console that keeps answering when its database does not: every request then gets a clear 503
(an HTML page, JSON under /api/, /healthz, /readyz and /metrics) naming the reason, the background
work waits for the database instead of dying, and all of it recovers by itself when the database is
back. Each process logs one line when its database goes away (again every REPEAT_SECONDS while it
stays away) and one when it is back — never a traceback per attempt.
"""
from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref

from flask import Flask, current_app, jsonify, render_template, request
from sqlalchemy import text
from sqlalchemy.exc import InterfaceError, OperationalError, ProgrammingError

from .extensions import db

log = logging.getLogger(__name__)

UNREACHABLE = (OperationalError, InterfaceError)
SCHEMA_ERRORS = (OperationalError, InterfaceError, ProgrammingError)     # also: the tables are missing
REPEAT_SECONDS = 60.0       # how often a lasting outage is logged again
PROBE_SECONDS = 1.0         # while down, requests probe the database at most this often
JSON_PATHS = ("/api/", "/metrics", "/healthz", "/readyz")
METRICS_PATH = "/metrics"   # answers 200 in an outage, saying so in messaging_console_database_up


def reason(error: BaseException) -> str:
    """The driver's own first line of why the database does not answer."""
    cause = getattr(error, "orig", None) or error
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return (lines[0] if lines else type(cause).__name__)[:300]


def missing_tables(why: str) -> bool:
    """Whether a statement failed because the console's tables were never created (SQLite's and
    PostgreSQL's words for it)."""
    return "no such table" in why or ("relation" in why and "does not exist" in why)


def not_set_up(error: BaseException) -> str | None:
    """Why, when `error` says the console's tables were never created (SQLite raises an
    OperationalError for it, PostgreSQL a ProgrammingError); None for any other error."""
    if not isinstance(error, (OperationalError, ProgrammingError)):
        return None
    why = reason(error)
    return why if missing_tables(why) else None


def problem_line(error: BaseException) -> str:
    """The one line a command (the CLI, the migrations) ends with when it meets a database it cannot
    use."""
    why = reason(error)
    if missing_tables(why):
        return (f"The database has no console tables yet ({why}). "
                "Create them first: flask --app app db upgrade")
    return (f"The database cannot be used: {why}. "
            "Check CONSOLE_DATABASE_URL and that the database server answers.")


class Outage:
    """One process's view of its database: down or not, since when and why."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.down = False
        self.reason = ""
        self.since = 0.0
        self.failures = 0
        self.probed = 0.0
        self._logged = 0.0

    def failed(self, error: BaseException | str) -> None:
        """Note a failed attempt; log it when the outage begins and every REPEAT_SECONDS."""
        why = error if isinstance(error, str) else reason(error)
        now = time.monotonic()
        with self._lock:
            began = not self.down
            self.down, self.reason, self.probed = True, why, now
            self.failures += 1
            if began:
                self.since, self.failures = now, 1
            repeat = not began and now - self._logged >= REPEAT_SECONDS
            if began or repeat:
                self._logged = now
        if began:
            log.error("Messaging Console: database unreachable: %s (retrying; requests answer 503 "
                      "until it is back)", why)
        elif repeat:
            log.error("Messaging Console: database still unreachable after %.0f s (%d attempts): %s",
                      now - self.since, self.failures, why)

    def recovered(self) -> None:
        """Note that the database answers; log it when it ends an outage."""
        with self._lock:
            if not self.down:
                return
            self.down = False
            took, count = time.monotonic() - self.since, self.failures
        log.warning("Messaging Console: database reachable again after %.0f s (%d failed attempts)",
                    took, count)


def outage(app: Flask | None = None) -> Outage:
    """The Outage of `app` (the current one by default)."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    found = app.extensions.get("console_database")
    if found is None:
        found = app.extensions.setdefault("console_database", Outage())
    return found


def probe(app: Flask | None = None) -> str | None:
    """Ask the database for `SELECT 1` (in an app context); None when it answers, else why not."""
    state = outage(app)
    try:
        db.session.execute(text("SELECT 1"))
    except UNREACHABLE as exc:
        _rollback()
        state.failed(exc)
        return state.reason
    state.recovered()
    return None


def unavailable(why: str, *, answering: bool = False):
    """The 503 answer: JSON for machines, a page for people. `answering`: the database answers,
    but the statement failed (a busy SQLite, tables missing)."""
    if not answering:
        title = "Database unreachable"
        message = (f"Database unreachable: {why}. The console retries by itself and answers again "
                   "as soon as the database is back.")
    elif missing_tables(why):
        title = "Database not set up"
        message = (f"The database has no console tables ({why}): run `flask db upgrade` (make run "
                   "and the container do).")
    else:
        title = "Database error"
        message = f"The database answered with an error: {why}. Try again in a moment."
    state = "error" if answering else "unreachable"
    if request.path == "/readyz":     # its own shape: not ready, no broker known
        response = jsonify(status="down", brokers={}, database=state, reason=why,
                           message=message)
    elif request.path.startswith(JSON_PATHS):
        response = jsonify(error="database_unavailable", status="error", database=state,
                           reason=why, message=message)
    else:
        response = current_app.make_response(
            render_template("database_unavailable.html", title=title, reason=why,
                            message=message, answering=answering))
    response.status_code = 503
    response.headers["Retry-After"] = "5"
    if request.headers.get("HX-Request") == "true":
        response.headers["HX-Refresh"] = "true"     # htmx swaps no 503: show the page itself
    return response


def _rollback() -> None:
    try:
        db.session.rollback()
    except UNREACHABLE:
        pass


def close_engines(app: Flask) -> None:
    """Close every pooled connection of `app`'s engines. SQLite writes what its WAL file holds back
    into the database file (a checkpoint) when its last connection closes, so that after a command
    (`flask db upgrade`, …) the database file alone is the whole database."""
    with app.app_context():
        for engine in db.engines.values():
            engine.dispose()


def _close_at_exit(ref: weakref.ref[Flask]) -> None:
    app = ref()
    if app is not None:
        try:
            close_engines(app)
        except Exception:  # noqa: BLE001 - at exit, a database already gone has nothing to close
            pass


def init_app(app: Flask) -> None:
    """Answer 503 for every request while the database is away, and on a failed query; close the
    engines when the process exits (CLI commands, workers)."""
    atexit.register(_close_at_exit, weakref.ref(app))

    @app.before_request
    def _while_down():
        state = outage(app)
        if not state.down or request.endpoint == "static" or request.path == METRICS_PATH:
            return None         # /metrics answers 200 with messaging_console_database_up 0
        if time.monotonic() - state.probed < PROBE_SECONDS:
            return unavailable(state.reason)
        state.probed = time.monotonic()     # the others answer at once meanwhile
        why = probe(app)
        return unavailable(why) if why else None

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    def _unreachable(error):
        _rollback()
        why = probe(app)          # does it answer at all, or did only this statement fail?
        if why is not None:
            return unavailable(why)
        log.error("Messaging Console: database error on %s %s: %s", request.method, request.path,
                  reason(error))
        return unavailable(reason(error), answering=True)

    @app.errorhandler(ProgrammingError)
    def _not_set_up(error):
        """PostgreSQL's missing tables (SQLite's come as an OperationalError, above)."""
        _rollback()
        why = not_set_up(error)
        if why is None:
            raise error
        return unavailable(why, answering=True)
