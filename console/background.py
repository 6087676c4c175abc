"""What a serving process runs beside its requests: the environment overrides recorded in the audit log,
the background checks (console/checks/scheduler.py) and the configuration delivery worker
(console/delivery/outbox.py).

Started in every gunicorn worker (gunicorn.conf.py, `post_worker_init`) and by `flask run`, the Flask
developer's habit (in the process that serves: the reloader's child, not the parent that only watches
files), so that `/readyz` and the page get check results there too. Nothing starts at import time, nor
in tests, nor for any other CLI command.

When the database does not answer at start, the process serves anyway (every request gets a 503 that
says so, console/database.py) and a thread waits for the database, then starts the work.
"""
from __future__ import annotations

import logging
import threading
import time

import click
from flask import Flask
from flask.cli import run_command
from flask.helpers import get_debug_flag
from werkzeug.serving import is_running_from_reloader

from . import database, diagnostics
from .checks import scheduler
from .delivery import outbox
from .settings import references
from .settings.changes import record_environment
from .settings.environment import log_environment_warnings

log = logging.getLogger("console")
WAIT_MAX_SECONDS = 5.0      # longest pause between two attempts to reach the database at start


def start(app: Flask, *, log_warnings: bool = False) -> None:
    """Record the environment overrides (and log the settings warnings when `log_warnings`), then
    start the background checks and the delivery worker of this serving process (each unless turned
    off: CONSOLE_CHECK_SCHEDULER, CONSOLE_DELIVERY_WORKER) — at once, or as soon as the database
    answers."""
    if _prepare(app, log_warnings) is True:
        _start_work(app)
        return
    threading.Thread(target=_wait, args=(app, log_warnings), name="console-database-wait",
                     daemon=True).start()


def _prepare(app: Flask, log_warnings: bool) -> bool | str:
    """True when the database is there and set up (then the environment is recorded), False while it
    is unreachable (an outage: console.database logs it), and why when it answers without the console's
    tables: that is no outage, the work waits for `flask db upgrade` (the image's entrypoint runs it once
    the database is there)."""
    try:
        with app.app_context():
            record_environment()
            if log_warnings:
                log_environment_warnings(log)
    except database.SCHEMA_ERRORS as exc:
        why = database.not_set_up(exc)
        if why is None and not isinstance(exc, database.UNREACHABLE):
            raise
        if why is None:
            database.outage(app).failed(exc)
            return False
        database.outage(app).recovered()
        return why
    database.outage(app).recovered()
    return True


def _wait(app: Flask, log_warnings: bool) -> None:
    pause, told = 0.25, False
    while (ready := _prepare(app, log_warnings)) is not True:
        if ready and not told:
            told = True
            log.warning("Messaging Console: the database has no console tables yet (%s): background checks "
                        "and callback delivery wait for `flask --app app db upgrade`", ready)
        time.sleep(pause)
        pause = min(pause * 2, WAIT_MAX_SECONDS)
    log.warning("Messaging Console: database reachable: background checks and callback delivery "
                "start")
    _start_work(app)


def _start_work(app: Flask) -> None:
    scheduler.start(app)
    outbox.start(app)
    references.start(app, also=(diagnostics.audit_expired,))


def serving_with_flask_run() -> bool:
    """True while `flask run` loads the app in the process that will serve it."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.command is not run_command:
        return False
    reload = ctx.params.get("reload")
    if reload is None:
        reload = get_debug_flag()
    return is_running_from_reloader() or not reload
