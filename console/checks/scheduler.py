"""Background checks: a daemon thread per console process that, every second, claims the enabled
protocols that are due (through the database, so that several workers or replicas check each one at
most once per CONSOLE_CHECK_INTERVAL) and checks them concurrently."""
from __future__ import annotations

import logging
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

from flask import Flask

from ..brokers import PROTOCOLS

log = logging.getLogger(__name__)


class Scheduler:
    """Runs due checks in the background until stopped."""

    def __init__(self, app: Flask, tick: float = 1.0) -> None:
        self.app = app
        self.tick = tick
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"[:80]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=len(PROTOCOLS),
                                        thread_name_prefix="console-bgcheck")
        self._running: set[str] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="console-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_due()
            except Exception:  # noqa: BLE001 - the loop must survive a database hiccup
                log.exception("background check round failed")
            self._stop.wait(self.tick)

    def run_due(self) -> list[str]:
        """Claim and start every due check; returns the protocols started."""
        from ..settings import service as settings_service
        from . import claim

        started = []
        with self.app.app_context():
            interval = self.app.config["CHECK_INTERVAL"]
            for protocol in PROTOCOLS:
                with self._lock:
                    if protocol in self._running:
                        continue
                if not settings_service.effective(protocol).enabled:
                    continue
                if claim(protocol, interval, self.holder):
                    with self._lock:
                        self._running.add(protocol)
                    self._pool.submit(self._check, protocol)
                    started.append(protocol)
        return started

    def _check(self, protocol: str) -> None:
        from ..settings import service as settings_service
        from . import check_settings, record

        try:
            with self.app.app_context():
                settings = settings_service.effective(protocol, reveal=True)
                result = check_settings(settings, self.app.config["CHECK_TIMEOUT"])
                record(result, "scheduler")
        except Exception:  # noqa: BLE001
            log.exception("background check of %s failed", protocol)
        finally:
            with self._lock:
                self._running.discard(protocol)


def start(app: Flask) -> Scheduler | None:
    """Start the background checks of a serving process (gunicorn.conf.py calls this in every
    worker), unless CONSOLE_CHECK_SCHEDULER is false."""
    if not app.config["CHECK_SCHEDULER"] or "console_scheduler" in app.extensions:
        return None
    scheduler = Scheduler(app)
    app.extensions["console_scheduler"] = scheduler
    scheduler.start()
    return scheduler
