"""What a serving process runs beside its requests: the environment overrides recorded in the audit log,
the background checks (console/checks/scheduler.py) and the configuration delivery worker
(console/delivery/outbox.py).

Started in every gunicorn worker (gunicorn.conf.py, `post_worker_init`) and by `flask run`, the Flask
developer's habit (in the process that serves: the reloader's child, not the parent that only watches
files), so that `/readyz` and the page get check results there too. Nothing starts at import time, nor
in tests, nor for any other CLI command.
"""
from __future__ import annotations

import click
from flask import Flask
from flask.cli import run_command
from flask.helpers import get_debug_flag
from werkzeug.serving import is_running_from_reloader

from .checks import scheduler
from .delivery import outbox
from .settings.changes import record_environment


def start(app: Flask) -> None:
    """Record the environment overrides, then start the background checks and the delivery worker of
    this serving process (each unless turned off: CONSOLE_CHECK_SCHEDULER, CONSOLE_DELIVERY_WORKER)."""
    with app.app_context():
        record_environment()
    scheduler.start(app)
    outbox.start(app)


def serving_with_flask_run() -> bool:
    """True while `flask run` loads the app in the process that will serve it."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.command is not run_command:
        return False
    reload = ctx.params.get("reload")
    if reload is None:
        reload = get_debug_flag()
    return is_running_from_reloader() or not reload
