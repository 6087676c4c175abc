"""gunicorn settings read by `make run` and the container: every worker records the environment
overrides in the audit log (once per change), logs the SP_* values it ignores, and runs the
background checks and the delivery worker (console/background.py), coordinated through the database;
on exit it drops the broker work still queued (console/work.py).
A wrong CONSOLE_* variable stops the master with one line naming it."""
import logging
import os
import sys

from console.config import ConfigError, Defaults, parse_environment

try:
    _settings = {"BIND": Defaults.BIND, "WORKERS": Defaults.WORKERS, "THREADS": Defaults.THREADS,
                 **parse_environment(os.environ)}
except ConfigError as exc:
    print(f"Messaging Console: configuration error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

bind = _settings["BIND"]
workers = _settings["WORKERS"]
threads = _settings["THREADS"]
accesslog = "-"


def post_worker_init(worker):
    from console import background
    from console.settings.environment import log_environment_warnings

    with worker.wsgi.app_context():
        log_environment_warnings(logging.getLogger("console"))
    background.start(worker.wsgi)


def worker_exit(server, worker):
    from console import work

    if getattr(worker, "wsgi", None) is not None:
        work.stop(worker.wsgi)
