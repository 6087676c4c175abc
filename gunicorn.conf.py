"""gunicorn settings read by `make run` and the container: every worker records the environment
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
                 "WATCH_HELD": Defaults.WATCH_HELD,
                 **parse_environment(os.environ)}
    prepare_instance(instance_path(_settings))
except ConfigError as exc:
    print(f"Messaging Console: configuration error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

bind = _settings["BIND"]
workers = _settings["WORKERS"]
threads = _settings["THREADS"] + _settings["WATCH_HELD"]     # held watches never take the page threads
accesslog = "-"


def post_worker_init(worker):
    """Start the worker's background work; without a database the worker serves anyway (503 that
    says so) and starts it when the database answers (console/background.py)."""
    import signal

    from console import background
    from console.delivery import watch

    background.start(worker.wsgi, log_warnings=True)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        _end_watches_first(signum, worker, watch)


def _end_watches_first(signum, worker, watch):
    """On the signal that stops a worker, end the watches it holds at once (304) so that they never
    hold up a restart, then let gunicorn's own handler stop the worker."""
    import signal

    previous = signal.getsignal(signum)

    def handler(number, frame):
        watch.close(worker.wsgi)
        if callable(previous):
            previous(number, frame)

    signal.signal(signum, handler)


def worker_exit(server, worker):
    from console import work

    if getattr(worker, "wsgi", None) is not None:
        work.stop(worker.wsgi)
