"""Held watches of a service's configuration (CONTRACT § Watching a service's configuration).

A watch waits on the process's `Hub`: the change pipeline's `version_committed` signal wakes it at once
for a change committed by this process; for changes committed by other processes or replicas, one
poller thread per process (running only while watches are held) reads a fingerprint of the delivery
state — the newest version and the newest service update — every `CONSOLE_WATCH_POLL_SECONDS` and
wakes the watches when it moves. A woken watch looks at its own service's ETag and goes back to
waiting when its document did not change. Shutting down (`close`) ends every watch within a second.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

from flask import Flask
from sqlalchemy import func, select

from .. import signals
from ..extensions import db
from ..models import ConfigVersion, ExtensionService

log = logging.getLogger(__name__)

SLICE = 1.0        # longest single wait: a closing process answers its watches within a second


class Hub:
    """Where the watches of one process wait for a change."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._cond = threading.Condition()
        self.generation = 0
        self.closing = False
        self.held = 0
        self._poller: threading.Thread | None = None

    def notify(self) -> None:
        with self._cond:
            self.generation += 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closing = True
            self.generation += 1
            self._cond.notify_all()

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
                self._poller = threading.Thread(target=self._poll, name="watch-poller", daemon=True)
                self._poller.start()

    def release(self) -> None:
        with self._cond:
            self.held -= 1

    def _poll(self) -> None:
        """Wake the watches when another process committed a change; ends when none is held."""
        seen: Any = None
        every = float(self.app.config.get("WATCH_POLL_SECONDS", 0.5))
        while not self.closing:
            with self._cond:
                if self.held <= 0:
                    self._poller = None
                    return
            try:
                with self.app.app_context():
                    now = db.session.execute(select(
                        select(func.max(ConfigVersion.id)).scalar_subquery(),
                        select(func.max(ExtensionService.updated_at)).scalar_subquery())).one()
                    db.session.remove()
            except Exception as exc:  # noqa: BLE001 - a database outage: the watches wait on
                log.warning("watch: cannot read the delivery state: %s", exc)
                now = seen
            if seen is not None and now != seen:
                self.notify()
            seen = now
            time.sleep(every)


def hub(app: Flask) -> Hub:
    found = app.extensions.get("console_watch")
    if found is None:
        found = app.extensions["console_watch"] = Hub(app)
    return found


def deadline(wait: int) -> float:
    """When a watch of `wait` seconds ends: plus up to wait/16 of jitter, so that watchers spread."""
    return time.monotonic() + wait + random.uniform(0, wait / 16)


def init_app(app: Flask) -> None:
    """Wake this process's watches on every version it commits."""
    def woken(sender: Any, **_: Any) -> None:
        found = sender.extensions.get("console_watch") if isinstance(sender, Flask) else None
        if found is not None:
            found.notify()

    app.extensions["console_watch_receiver"] = woken      # kept alive with the app
    signals.version_committed.connect(woken, weak=False)
    signals.rollout_released.connect(woken, weak=False)     # the held services' documents moved


def close(app: Flask) -> None:
    """End every watch this process holds (at shutdown)."""
    found = app.extensions.get("console_watch")
    if found is not None:
        found.close()
