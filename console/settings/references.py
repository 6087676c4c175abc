"""Noticing changed secret references without a save: a daemon thread per serving process reads
every `file:` and `env:` reference of the saved configuration every CONSOLE_REFERENCE_POLL_SECONDS
(default 10) and, when what one resolves to differs from the fingerprint the configuration holds,
commits a new configuration version through the ordinary change pipeline (version, audit "file
/run/secrets/kafka-password changed", callbacks and watchers) — never with the value in it. Several
processes noticing the same change save it once: the pipeline rebases the later one onto the first,
which leaves nothing to save."""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Iterator, Mapping

from flask import Flask

from .. import database
from ..messaging import references
from ..messaging.effective import current, environment, forget, reference_key
from ..messaging.state import State
from . import changes as pipeline

log = logging.getLogger(__name__)


def changed_references() -> list[tuple[str, str, str, dict]]:
    """(part of the state, protocol, field, the entry to save) for every saved reference whose value is not the one
    the configuration remembers."""
    out = []
    state = current().state
    env, key = environment(), reference_key()
    for part, protocol, name, entry in _entries(state):
        found = references.status(references.SecretRef.from_json(entry), env, key, False)
        if found.fingerprint != entry.get("seen"):
            out.append((part, protocol, name, references.SecretRef(
                entry["ref"], found.fingerprint,
                references.now_iso() if found.resolves else entry.get("changed_at")).as_json()))
    return out


def _entries(state: State) -> Iterator[tuple[str, str, str, Mapping[str, Any]]]:
    """("secrets" or "values", protocol, field, entry) of every saved reference."""
    for part in ("secrets", "values"):
        for protocol, fields in sorted(getattr(state, part).items()):
            for name, entry in sorted(fields.items()):
                if references.stored(entry):
                    yield part, protocol, name, entry


def describe(ref: str, resolves: bool) -> str:
    what = f"file {ref[5:]}" if ref.startswith("file:") else f"environment variable {ref[4:]}"
    return f"{what} changed" if resolves else f"{what} no longer resolves"


def poll_once() -> list[str]:
    """Save what changed (one version per round); the summaries of what was noticed."""
    forget()
    found = changed_references()
    if not found:
        return []
    candidate = current().state.copy()
    texts = []
    for part, protocol, name, entry in found:
        getattr(candidate, part)[protocol][name] = entry
        texts.append(describe(entry["ref"], entry["seen"] is not None))
    summary = "; ".join(dict.fromkeys(texts))
    outcome = pipeline.commit(candidate, actor="console", origin="reference", action="reference",
                              confirm=True, summary=summary)
    forget()
    return [summary] if outcome.status not in ("unchanged",) else []


class Poller:
    """The thread that runs poll_once() every `interval` seconds until stopped."""

    def __init__(self, app: Flask, interval: float,
                 also: tuple[Callable[[], list[str]], ...] = ()) -> None:
        self.app = app
        self.interval = interval
        self.also = also            # more rounds of the same kind (the expired-certificate audit)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="console-references", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with self.app.app_context():
                    for summary in poll_once():
                        log.warning("Messaging Console: %s: new configuration version", summary)
                    for job in self.also:
                        for summary in job():
                            log.warning("Messaging Console: %s", summary)
            except database.UNREACHABLE as exc:
                database.outage(self.app).failed(exc)
            except Exception:  # noqa: BLE001 - the loop must survive anything
                log.exception("Polling the secret references failed; trying again")


def start(app: Flask, also: tuple[Callable[[], list[str]], ...] = ()) -> Poller | None:
    """Start this process's poller (CONSOLE_REFERENCE_POLL_SECONDS; 0 turns it off), running
    `also` after each round."""
    interval = float(app.config["REFERENCE_POLL_SECONDS"])
    if interval <= 0:
        return None
    poller = Poller(app, interval, also)
    app.extensions["console_reference_poller"] = poller
    poller.start()
    return poller
