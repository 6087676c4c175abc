"""On-demand broker work — Check now, Test connection, the save guard's test, diagnoses from the page
and the API — runs on one bounded pool per process, apart from the web threads, so that a crowd of
slow brokers never leaves /healthz, /readyz or a page without a thread to answer them:

- at most `BROKER_WORK_THREADS` run at once, and up to `BROKER_WORK_QUEUE` more wait their turn
  (only work nobody waits for: page diagnoses and `?wait=false` API diagnoses, which are polled);
- a request that waits for its answer (Check now, Test connection, the save guard, a synchronous API
  diagnosis) needs a free pool thread now, and at most `BROKER_WORK_WAITING` web threads of a process
  (never every one of them) wait at once.

Beyond either bound, `Busy` says when to try again; views answer it with 429 and Retry-After.
"""
from __future__ import annotations

import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, TypeVar

from flask import Flask, current_app

T = TypeVar("T")
_KEY = "console_broker_work"
GRACE = 5.0      # seconds a waiting request allows beyond the work's own deadline


class Busy(Exception):
    """Every pool thread (or every waiting slot) is taken: try again in `retry_after` seconds."""

    def __init__(self, retry_after: int, what: str) -> None:
        self.retry_after = retry_after
        self.what = what
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return (f"The console is busy: {self.what}. Try again in {self.retry_after} s.")


class BrokerWork:
    """The bounded pool of one process; `submit` queues, `call` waits for a free thread's answer."""

    def __init__(self, app: Flask, threads: int, queue: int, waiting: int) -> None:
        self.app, self.threads, self.queue, self.waiting_limit = app, threads, queue, waiting
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="console-broker-work")
        self._lock = threading.Lock()
        self.pending = 0          # queued or running
        self.waiting = 0          # web threads waiting for an answer

    def retry_after(self) -> int:
        """Seconds until a thread is likely free: one check timeout per round of queued work."""
        rounds = max(1, math.ceil((self.pending + 1) / self.threads))
        return max(1, math.ceil(self.app.config["CHECK_TIMEOUT"] * min(rounds, 12)))

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            with self.app.app_context():
                return fn(*args)
        finally:
            with self._lock:
                self.pending -= 1

    def _full(self, wait: bool) -> Busy | None:
        if wait and (self.pending >= self.threads or self.waiting >= self.waiting_limit):
            return Busy(self.retry_after(), f"{self.pending} broker checks and diagnoses are "
                        f"running and {self.waiting} requests wait for theirs")
        if self.pending >= self.threads + self.queue:
            return Busy(self.retry_after(), f"{self.pending} broker checks and diagnoses are "
                        "running or waiting")
        return None

    def room(self, wait: bool) -> None:
        """Busy now when `call` (`wait`) or `submit` would be refused: a request finds out before it
        does any other work (nothing is reserved; `call` and `submit` decide)."""
        with self._lock:
            busy = self._full(wait)
        if busy is not None:
            raise busy

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Queue `fn(*args)` (run in an app context); Busy when the queue is full."""
        with self._lock:
            busy = self._full(wait=False)
            if busy is not None:
                raise busy
            self.pending += 1
        try:
            return self._pool.submit(self._run, fn, args)
        except RuntimeError:
            with self._lock:
                self.pending -= 1
            raise

    def call(self, fn: Callable[..., T], *args: Any, timeout: float) -> T:
        """`fn(*args)` on a free pool thread, waiting for its answer (at most `timeout` + GRACE);
        Busy at once when no thread is free or enough web threads wait already."""
        with self._lock:
            busy = self._full(wait=True)
            if busy is not None:
                raise busy
            self.pending += 1
            self.waiting += 1
        try:
            future = self._pool.submit(self._run, fn, args)
        except RuntimeError:
            with self._lock:
                self.pending -= 1
                self.waiting -= 1
            raise
        try:
            return future.result(timeout=timeout + GRACE)
        except FutureTimeout:
            raise Busy(self.retry_after(), "the broker work did not finish in time") from None
        finally:
            with self._lock:
                self.waiting -= 1

    def stats(self) -> dict[str, int]:
        """Now: pending (queued or running) and waiting, with the bounds."""
        with self._lock:
            return {"pending": self.pending, "waiting": self.waiting, "threads": self.threads,
                    "queue": self.queue, "waiting_limit": self.waiting_limit}

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)


def waiting_limit(config: dict[str, Any]) -> int:
    """BROKER_WORK_WAITING, but always below the web threads of the process (when it has several)."""
    threads = int(config.get("THREADS") or 1)
    return max(1, min(int(config["BROKER_WORK_WAITING"]), threads - 1 if threads > 1 else 1))


_CREATE = threading.Lock()


def pool(app: Flask | None = None) -> BrokerWork:
    """This process's pool (made on first use)."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    work = app.extensions.get(_KEY)
    if work is None:
        with _CREATE:
            work = app.extensions.get(_KEY)
            if work is None:
                work = BrokerWork(app, app.config["BROKER_WORK_THREADS"],
                                  app.config["BROKER_WORK_QUEUE"], waiting_limit(app.config))
                app.extensions[_KEY] = work
    return work


def submit(fn: Callable[..., T], *args: Any) -> Future[T]:
    """Queue broker work on this process's pool; Busy when full."""
    return pool().submit(fn, *args)


def call(fn: Callable[..., T], *args: Any, timeout: float) -> T:
    """Broker work whose answer this request waits for; Busy when no thread is free."""
    return pool().call(fn, *args, timeout=timeout)


def room(wait: bool = True) -> None:
    """Busy at once when this process's pool would refuse the work (see BrokerWork.room)."""
    pool().room(wait)


def stop(app: Flask) -> None:
    """A process ending (gunicorn's worker_exit): queued work is dropped, running work finishes."""
    work = app.extensions.pop(_KEY, None)
    if work is not None:
        work.shutdown(wait=False)


def wait_idle(app: Flask, seconds: float = 30) -> None:
    """Wait until nothing is queued or running (tests and shutdown)."""
    work = app.extensions.get(_KEY)
    deadline = time.monotonic() + seconds
    while work is not None and work.stats()["pending"] and time.monotonic() < deadline:
        time.sleep(0.02)
