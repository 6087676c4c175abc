"""Background checks: a daemon thread per console process that, every second, claims the enabled
protocols that are due (through the database, so that several workers or replicas check each one at
most once per CONSOLE_CHECK_INTERVAL) and checks them concurrently. A protocol whose settings changed
since its last claimed check is due at once; a saved change wakes the scheduler (`kick`)."""
from __future__ import annotations

import logging
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Flask, current_app, has_app_context

from .. import database, signals
from ..brokers import PROTOCOLS
from ..messaging import effective as settings_read
from . import UNREADABLE, check_settings, claim, current_digest, record

log = logging.getLogger(__name__)


class Scheduler:
    """Runs due checks in the background until stopped."""

    def __init__(self, app: Flask, tick: float = 1.0) -> None:
        self.app = app
        self.tick = tick
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"[:80]
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=len(PROTOCOLS),
                                        thread_name_prefix="console-bgcheck")
        self._running: set[str] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="console-scheduler", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run the next round now instead of at the next tick."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_due()
            except database.UNREACHABLE as exc:     # one line per outage, not one per second
                database.outage(self.app).failed(exc)
            except Exception:  # noqa: BLE001 - the loop must survive anything
                log.exception("background check round failed")
            else:
                database.outage(self.app).recovered()
            self._wake.wait(self.tick)
            self._wake.clear()

    def run_due(self) -> list[str]:
        """Claim and start every due check; returns the protocols started."""
        started = []
        with self.app.app_context():
            interval = self.app.config["CHECK_INTERVAL"]
            for protocol in PROTOCOLS:
                with self._lock:
                    if protocol in self._running:
                        continue
                if not settings_read.effective(protocol).enabled:
                    continue
                digest = current_digest(protocol)
                if claim(protocol, interval, self.holder,
                         digest=None if digest == UNREADABLE else digest):
                    with self._lock:
                        self._running.add(protocol)
                    self._pool.submit(self._check, protocol)
                    started.append(protocol)
        return started

    def _check(self, protocol: str) -> None:
        try:
            with self.app.app_context():
                settings = settings_read.effective(protocol, reveal=True)
                result = check_settings(settings, self.app.config["CHECK_TIMEOUT"])
                record(result, "scheduler")
        except database.UNREACHABLE as exc:
            database.outage(self.app).failed(exc)
        except Exception:  # noqa: BLE001
            log.exception("background check of %s failed", protocol)
        finally:
            with self._lock:
                self._running.discard(protocol)


def kick() -> None:
    """After a saved change: forget this process's cached /readyz answer and let its scheduler (if
    it runs one) check at once the protocols whose settings changed; other processes see the change
    at their next tick (and their cached answer expires within CONSOLE_READY_CACHE_SECONDS)."""
    if has_app_context():
        current_app.extensions.pop("console_readiness", None)
        scheduler = current_app.extensions.get("console_scheduler")
        if scheduler is not None:
            scheduler.wake()


def start(app: Flask) -> Scheduler | None:
    """Start the background checks of a serving process (gunicorn.conf.py calls this in every
    worker), unless CONSOLE_CHECK_SCHEDULER is false."""
    if not app.config["CHECK_SCHEDULER"] or "console_scheduler" in app.extensions:
        return None
    scheduler = Scheduler(app)
    app.extensions["console_scheduler"] = scheduler
    scheduler.start()
    return scheduler


def init_app(app: Any) -> None:
    """Check at once the protocols a committed configuration version changed."""
    signals.version_committed.connect(_on_version_committed, weak=False)


def _on_version_committed(sender: Any, **_: Any) -> None:
    kick()
