"""gunicorn settings read by `make run` and the container: an asyncio worker (console/serving.py) that
serves the Flask app on CONSOLE_THREADS threads and holds watches without a thread; every worker records the environment
overrides in the audit log (once per change), logs the SP_* values it ignores, and runs the
background checks and the delivery worker (console/background.py), coordinated through the database;
on exit it drops the broker work still queued (console/work.py).
A wrong CONSOLE_* variable, or an instance directory that cannot be made, stops the master with one
line naming it."""
import os
import sys

from console import instance_path, prepare_instance
from console.config import ConfigError, Defaults, parse_environment

try:
    _settings = {"BIND": Defaults.BIND, "WORKERS": Defaults.WORKERS, "THREADS": Defaults.THREADS,
                 **parse_environment(os.environ)}
    prepare_instance(instance_path(_settings))
except ConfigError as exc:
    print(f"Messaging Console: configuration error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

bind = _settings["BIND"]
workers = _settings["WORKERS"]
threads = _settings["THREADS"]             # the Flask app's threads; held watches take none
worker_class = "console.serving.Worker"
accesslog = "-"


def post_worker_init(worker):
    """Start the worker's background work; without a database the worker serves anyway (503 that
    says so) and starts it when the database answers (console/background.py)."""
    from console import background

    background.start(getattr(worker, "flask", worker.wsgi), log_warnings=True)


def worker_exit(server, worker):
    from console import work

    app = getattr(worker, "flask", None) or getattr(worker, "wsgi", None)
    if app is not None:
        work.stop(app)
