"""gunicorn settings read by `make run` and the container: every worker records the environment
overrides in the audit log (once per change) and runs the background checks and the delivery worker
(console/background.py), coordinated through the database."""
import os

bind = os.environ.get("CONSOLE_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("CONSOLE_WORKERS", "2"))
threads = int(os.environ.get("CONSOLE_THREADS", "4"))
accesslog = "-"


def post_worker_init(worker):
    from console import background

    background.start(worker.wsgi)
