"""The agent's loop: watch the document, run the program on it (exec) or write it (render), and
acknowledge what really happened."""
from __future__ import annotations

import collections
import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import formats
from .api import Backoff, Console, Refused, Unavailable
from .diagnose import diagnose

STDERR_LINES = 8
LINE_MAX = 400              # characters kept of one line of the program's standard error
ACK_LIMIT = 2000            # the console keeps this much of a message
WORDS = "; its last words: "
FORWARDED = ("SIGHUP", "SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGQUIT")


def say(text: str) -> None:
    """One line of the agent's own on its standard error."""
    sys.stderr.write(f"console-agent: {text}\n")
    sys.stderr.flush()


@dataclass
class Options:
    console: str
    token: str
    service: str
    protocols: list[str]
    format: str
    state_dir: Path
    tls_dir: Path
    template: str = ""
    out: Path | None = None
    wait: float = 60
    poll: float = 2
    retry_max: float = 30
    timeout: float = 10
    settle: float = 5
    health: str | None = None
    signal: int | None = None
    grace: float = 10
    on_change: str | None = None
    command: list[str] = field(default_factory=list)


class State:
    """The last document that ran, kept in the state directory (0700 directory, 0600 file)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.path = directory / "last.json"

    def load(self) -> dict | None:
        try:
            document = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return document if isinstance(document, dict) and "etag" in document else None

    def save(self, document: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        formats.write_private(self.path, json.dumps(document, sort_keys=True))


class Watcher(threading.Thread):
    """Registers the service, then watches its document: every new one is put on `documents`. An
    unreachable console is retried with backoff and jitter; a held watch (`?wait=`) is used when the
    console holds it, else it polls every `poll` seconds."""

    def __init__(self, console: Console, options: Options, etag: str | None) -> None:
        super().__init__(name="console-agent-watch", daemon=True)
        self.console, self.options, self.etag = console, options, etag
        self.documents: queue.Queue[dict] = queue.Queue()
        self.stop = threading.Event()
        self.registered = False
        self.refused: str | None = None
        self.last: dict | None = None     # the newest document the console gave

    def run(self) -> None:
        backoff, away_since = Backoff(cap=self.options.retry_max), None
        while not self.stop.is_set():
            try:
                if not self.registered:
                    self.console.register(self.options.protocols)
                    self.registered = True
                document = self.console.fetch(self.etag, self.options.wait)
            except Unavailable as exc:
                if away_since is None:
                    away_since = time.monotonic()
                    say(f"{exc}; the program keeps running on what it has, retrying with backoff")
                self.stop.wait(backoff.next())
                continue
            except Refused as exc:
                self.refused = str(exc)
                say(f"the console refused the agent ({exc}); retrying with backoff")
                self.stop.wait(backoff.next())
                continue
            if away_since is not None:
                say(f"the console is back after {time.monotonic() - away_since:.1f} s; caught up")
                away_since = None
            backoff.reset()
            self.refused = None
            if document is not None:
                self.etag, self.last = document["etag"], document
                self.documents.put(document)
            if self.console.asked and self.console.asked != self.console.seen:
                self._diagnose(self.console.asked)
            elif document is None and not self.console.held:
                self.stop.wait(self.options.poll)

    def _diagnose(self, request: str) -> None:
        """The console asked for a diagnosis from here: run the network steps against the nodes of
        the newest document and send them (kept for the next turn while the console is away)."""
        document = self.last
        steps = diagnose(document) if document is not None else None
        if steps is None:
            say(f"the console asked for a diagnosis ({request}), but the document names no protocol "
                f"to run the network steps against")
            self.console.seen = request
            return
        say(f"the console asked for a diagnosis: {steps['protocol']} from {steps['from']}: {steps['cause']}")
        try:
            self.console.diagnosis(request, steps)
        except Unavailable as exc:
            say(f"{exc}; the diagnosis is sent again at the next turn")
            self.stop.wait(self.options.poll)
            return
        except Refused as exc:
            say(f"the console did not take the diagnosis ({exc})")
        self.console.seen = request


class Acks:
    """Acknowledgements, kept and resent while the console is away (only the newest matters)."""

    def __init__(self, console: Console) -> None:
        self.console, self.pending, self.lock = console, None, threading.Lock()

    def send(self, version: int, status: str, message: str, diagnosis: dict | None = None) -> None:
        with self.lock:
            self.pending = (version, status, message, diagnosis)
        self.flush()

    def flush(self) -> None:
        with self.lock:
            pending = self.pending
            if pending is None:
                return
            try:
                try:
                    self.console.ack(*pending)
                except Refused as exc:
                    if exc.status != 422 or pending[3] is None:
                        raise
                    self.console.ack(*pending[:3])     # a console that keeps no network steps
            except Unavailable:
                return
            except Refused as exc:
                say(f"the console refused the acknowledgement of v{pending[0]}: {exc}")
            self.pending = None


def _name(command: list[str]) -> str:
    """The program's name as the acknowledgement says it (what `sh -c 'exec prog …'` runs)."""
    if len(command) >= 3 and os.path.basename(command[0]) in ("sh", "bash", "dash") and command[1] == "-c":
        words = shlex.split(command[2]) if command[2].strip() else [command[0]]
        words = [w for w in words if w not in ("exec",) and "=" not in w.split("/")[0]] or words
        return os.path.basename(words[0])
    return os.path.basename(command[0]) if command else "program"


class Child:
    """The program: started in a process group of its own with the settings in its environment; its
    standard error passes through and its last lines are kept."""

    def __init__(self, command: list[str], env: dict[str, str], secrets: list[str]) -> None:
        self.command, self.secrets = command, secrets
        self.lines: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self.started = time.monotonic()
        self.process = subprocess.Popen(command, env={**os.environ, **env}, stderr=subprocess.PIPE,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in iter(self.process.stderr.readline, b""):
            sys.stderr.buffer.write(raw)
            sys.stderr.flush()
            text = raw.decode(errors="replace").strip()
            if text:
                self.lines.append(formats.scrub(text, self.secrets)[:LINE_MAX])

    @property
    def name(self) -> str:
        return _name(self.command)

    def poll(self) -> int | None:
        return self.process.poll()

    def last_words(self) -> str:
        self.reader.join(timeout=0.5)
        return " | ".join(self.lines)

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, grace: float) -> int | None:
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait()
        self.reader.join(timeout=1)
        return self.process.returncode


def describe_exit(status: int) -> str:
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"


class Agent:
    """One agent: exec or render mode."""

    def __init__(self, options: Options, mode: str) -> None:
        self.o, self.mode = options, mode
        self.console = Console(options.console, options.token, options.service, options.timeout)
        self.state = State(options.state_dir)
        self.acks = Acks(self.console)
        self.good: dict | None = self._kept()             # the last version that ran
        self.running: dict | None = None                  # what runs now
        self.child: Child | None = None
        self.stopping: int | None = None
        self.failed_etags: set[str] = set()

    def _kept(self) -> dict | None:
        """The last document that ran here, when it still fits this command (its protocols, its
        format); else None, with a line saying why."""
        document = self.state.load()
        if document is None:
            return None
        other = sorted(set(document.get("brokers") or {}) - set(self.o.protocols))
        try:
            if other:
                raise formats.CannotCarry(self.o.format, ",".join(other), "*", line=(
                    f"{self.state.path} holds v{document.get('version')} for {', '.join(other)}, which "
                    f"--protocols does not name"))
            self._check(document)
        except formats.CannotCarry as exc:
            say(f"not starting on the kept document: {exc}")
            return None
        return document

    # -- making the settings ------------------------------------------------------------------------
    def _environment(self, document: dict) -> dict[str, str]:
        if self.o.format in formats.ENV_FORMATS:
            return formats.environment(self.o.format, document, self.o.tls_dir)
        return formats.streampipes(document, self.o.tls_dir)

    def _write(self, document: dict) -> None:
        if self.o.out is not None:
            formats.write_private(self.o.out, formats.render(self.o.format, document, self.o.tls_dir,
                                                             self.o.template))

    def _check(self, document: dict) -> None:
        """Raise CannotCarry before anything runs (the whole document through the format)."""
        if self.o.format in formats.ENV_FORMATS:
            formats.environment(self.o.format, document, self.o.tls_dir)
        else:
            formats.render(self.o.format, document, self.o.tls_dir, self.o.template)

    # -- exec ---------------------------------------------------------------------------------------
    def _start(self, document: dict) -> None:
        self._write(document)
        self.child = Child(self.o.command, self._environment(document), formats.secrets_of(document))
        self.running = document

    def _restart(self, document: dict) -> None:
        if self.child is not None and self.child.poll() is None and self.o.signal is not None \
                and self.running is not None:
            self._write(document)
            self.child.secrets = formats.secrets_of(document)
            self.child.signal(self.o.signal)
            self.running = document
            return
        if self.child is not None:
            self.child.stop(self.o.grace)
        self._start(document)

    def _settled(self, since: float) -> tuple[bool, str]:
        """Wait until the child has run `settle` seconds (from `since`) and its health passed."""
        assert self.child is not None and self.running is not None
        child = self.child
        while time.monotonic() - since < self.o.settle:
            if self.stopping is not None:
                return False, "the agent was stopped"
            status = child.poll()
            if status is not None:
                words = child.last_words()
                return False, (f"{child.name} {describe_exit(status)} after "
                               f"{time.monotonic() - child.started:.1f} s"
                               + (f"{WORDS}{words}" if words else "; it wrote nothing on stderr"))
            time.sleep(0.05)
        if self.o.health:
            try:
                done = subprocess.run(self.o.health, shell=True, capture_output=True, text=True,
                                      env={**os.environ, **self._environment(self.running)},
                                      timeout=max(self.o.settle, 10))
            except subprocess.TimeoutExpired:
                return False, f"--health did not answer within {max(self.o.settle, 10):g} s"
            if done.returncode != 0:
                said = formats.scrub(" | ".join((done.stderr or done.stdout).strip().splitlines()[-3:]),
                                     formats.secrets_of(self.running))
                words = child.last_words()
                return False, (f"--health exited with status {done.returncode}"
                               + (f": {said}" if said else "")
                               + (f"{WORDS}{words}" if words else ""))
        status = child.poll()
        if status is not None:
            return False, f"{child.name} {describe_exit(status)}{WORDS}{child.last_words()}"
        return True, f"{child.name} runs (pid {child.process.pid}) for {self.o.settle:g} s" + (
            ", --health passed" if self.o.health else "")

    def _apply(self, document: dict) -> None:
        version = document["version"]
        try:
            self._check(document)
        except formats.CannotCarry as exc:
            say(str(exc))
            self.acks.send(version, "failed", str(exc))
            self.stopping = 2
            return
        previous = self.running
        since = time.monotonic()
        signalled = self.o.signal is not None and self.child is not None and self.child.poll() is None
        self._restart(document)
        ok, how = self._settled(since)
        if self.stopping is not None:
            return
        if ok:
            self.good = document
            self.state.save(document)
            say(f"v{version} applied: {how}")
            self.acks.send(version, "applied", how)
            return
        self.failed_etags.add(document["etag"])
        back = self.good if self.good is not None and self.good["etag"] != document["etag"] else None
        if back is not None:
            if signalled and self.child is not None and self.child.poll() is None:
                self._restart(back)
            else:
                if self.child is not None:
                    self.child.stop(self.o.grace)
                self._start(back)
            message = failure(version, how, f"went back to v{back['version']}, which runs again")
        else:
            if self.child is not None:
                self.child.stop(self.o.grace)
            self.child, self.running = None, previous
            message = failure(version, how, "no earlier version ran here, so the program waits for the "
                                            "next one")
        say(message)
        self.acks.send(version, "failed", message, diagnose(document))

    def _exec_loop(self, watcher: Watcher) -> int:
        if self.good is not None:
            say(f"starting {_name(self.o.command)} on v{self.good['version']}, the last version that "
                f"ran here ({self.state.path})")
            self._start(self.good)
        while True:
            if self.stopping is not None and (self.child is None or self.child.poll() is not None):
                return self.stopping if self.child is None else _exit_code(self.child.poll())
            if self.child is not None and self.stopping is None:
                status = self.child.poll()
                if status is not None:
                    say(f"{self.child.name} {describe_exit(status)}; the agent exits with it")
                    self.acks.flush()
                    return _exit_code(status)
            try:
                document = watcher.documents.get(timeout=0.1)
            except queue.Empty:
                self.acks.flush()
                continue
            while not watcher.documents.empty():          # only the newest matters
                document = watcher.documents.get_nowait()
            if self.running is not None and document["etag"] == self.running["etag"] \
                    and self.child is not None:
                if self.good is not None and self.good["etag"] == document["etag"]:
                    self.acks.send(document["version"], "applied",
                                   f"{self.child.name} runs (pid {self.child.process.pid}) on it")
                continue
            if document["etag"] in self.failed_etags:
                continue
            self._apply(document)

    # -- render -------------------------------------------------------------------------------------
    def _on_change(self, document: dict) -> tuple[bool, str]:
        if not self.o.on_change:
            return True, f"wrote {self.o.out}"
        done = subprocess.run(self.o.on_change, shell=True, capture_output=True, text=True,
                              env={**os.environ, **self._environment(document)})
        sys.stdout.write(done.stdout)           # the command's own output passes through
        sys.stdout.flush()
        sys.stderr.write(done.stderr)
        sys.stderr.flush()
        if done.returncode == 0:
            return True, f"wrote {self.o.out}; --on-change exited 0"
        words = formats.scrub(" | ".join(done.stderr.strip().splitlines()[-STDERR_LINES:]),
                              formats.secrets_of(document))
        return False, (f"wrote {self.o.out}; --on-change exited with status {done.returncode}"
                       + (f"{WORDS}{words}" if words else ""))

    def _render(self, document: dict) -> None:
        version = document["version"]
        try:
            self._check(document)
        except formats.CannotCarry as exc:
            say(str(exc))
            self.acks.send(version, "failed", str(exc))
            self.stopping = 2
            return
        self._write(document)
        ok, how = self._on_change(document)
        if ok:
            self.good, self.running = document, document
            self.state.save(document)
            say(f"v{version} applied: {how}")
            self.acks.send(version, "applied", how)
            return
        back = "nothing was written before it"
        if self.good is not None and self.good["etag"] != document["etag"]:
            self._write(self.good)
            self._on_change(self.good)
            back = f"went back to v{self.good['version']}, written again"
        message = failure(version, how, back)
        say(message)
        self.failed_etags.add(document["etag"])
        self.acks.send(version, "failed", message, diagnose(document))

    def _render_loop(self, watcher: Watcher) -> int:
        if self.good is not None:
            self._write(self.good)
            self.running = self.good
        while self.stopping is None:
            try:
                document = watcher.documents.get(timeout=0.2)
            except queue.Empty:
                self.acks.flush()
                continue
            if self.running is not None and document["etag"] == self.running["etag"]:
                self.acks.send(document["version"], "applied", f"{self.o.out} holds it")
                continue
            if document["etag"] not in self.failed_etags:
                self._render(document)
        return self.stopping

    # -- both ---------------------------------------------------------------------------------------
    def _signals(self) -> None:
        def forward(sig: int, frame: Any) -> None:
            if sig in (signal.SIGTERM, signal.SIGINT) and self.stopping is None:
                self.stopping = 128 + sig
            if self.child is not None and self.child.poll() is None:
                self.child.signal(sig)
        if threading.current_thread() is threading.main_thread():
            for name in FORWARDED:
                signal.signal(getattr(signal, name), forward)

    def run(self) -> int:
        self._signals()
        watcher = Watcher(self.console, self.o, None)
        watcher.start()
        try:
            return self._exec_loop(watcher) if self.mode == "exec" else self._render_loop(watcher)
        finally:
            watcher.stop.set()
            if self.child is not None:
                self.child.stop(self.o.grace)
            self.acks.flush()


def failure(version: int, how: str, back: str) -> str:
    """The `failed` message: what happened, what runs now, then the program's last words — cut at
    the front when the whole would not fit the console's limit (the last lines matter most)."""
    head, sep, words = how.partition(WORDS)
    message = f"v{version} failed: {head}; {back}"
    if sep:
        room = ACK_LIMIT - len(message) - len(sep)
        if len(words) > room:
            words = "…" + words[-(room - 1):]
        message += sep + words
    return message[:ACK_LIMIT]


def _exit_code(status: int | None) -> int:
    if status is None:
        return 0
    return 128 - status if status < 0 else status


def once(options: Options, out: Callable[[str], Any] = sys.stdout.write) -> int:
    """Fetch once, write --out (or print), exit; the last document on disk when the console is away."""
    console, state = Console(options.console, options.token, options.service, options.timeout), \
        State(options.state_dir)
    try:
        console.register(options.protocols)
        document = console.fetch(None)
        assert document is not None
    except Unavailable as exc:
        document = state.load()
        if document is None:
            say(f"{exc}; no earlier document in {state.path}")
            return 1
        say(f"{exc}; using v{document['version']} from {state.path}")
    except Refused as exc:
        say(f"the console refused the agent: {exc}")
        return 1
    try:
        text = formats.render(options.format, document, options.tls_dir, options.template)
    except formats.CannotCarry as exc:
        say(str(exc))
        return 2
    state.save(document)
    if options.out is not None:
        formats.write_private(options.out, text)
        say(f"wrote v{document['version']} to {options.out}")
    else:
        out(text)
    return 0
