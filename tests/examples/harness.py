"""The example extension service as a child process, for tests: its stdout lines as they come, /status,
SIGTERM. Usable by any test that runs the example against a console (tests/clients/live_console.py):

    service = ExampleProcess("--console", url, "--token", token, "--service", "edge",
                             "--listen", "127.0.0.1:0").started()
    service.expect(r"applied v\\d+ mqtt 127\\.0\\.0\\.1:11883")
    assert service.status()["status"] == "applied"
    assert service.stop() == 0
"""
from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "extension_service" / "service.py"


class ExampleProcess:
    """The example service as a child process, its stdout lines collected as they come."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, python: str = sys.executable) -> None:
        self.lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self.process = subprocess.Popen([python, str(SCRIPT), *args], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        self._readers = [threading.Thread(target=self._read, args=(self.process.stdout, self._queue.put),
                                          daemon=True),
                         threading.Thread(target=self._read, args=(self.process.stderr, self.stderr_lines.append),
                                          daemon=True)]
        for reader in self._readers:
            reader.start()
        self.port = 0

    @staticmethod
    def _read(stream: Any, sink: Any) -> None:
        for line in stream:
            sink(line.rstrip("\n"))

    def expect(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        """The next stdout line matching `pattern` (earlier lines are kept in `lines`)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._queue.get(timeout=max(left, 0.01))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} within {timeout} s; got {self.lines}; "
                                     f"stderr: {self.stderr()}") from None
            self.lines.append(line)
            found = re.fullmatch(pattern, line)
            if found:
                return found

    def started(self) -> ExampleProcess:
        self.port = int(self.expect(r"listening 127\.0\.0\.1:(\d+)").group(1))
        return self

    def status(self) -> dict[str, Any]:
        """Its GET /status document."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/status", timeout=5) as answer:
            return json.loads(answer.read())

    def stop(self) -> int:
        """SIGTERM, then the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError("the service did not exit within 30 s of SIGTERM") from None

    def output(self) -> str:
        """Every stdout line so far, those not yet matched by `expect` included (complete once exited)."""
        if self.process.poll() is not None:
            self._readers[0].join(timeout=5)
        while not self._queue.empty():
            self.lines.append(self._queue.get_nowait())
        return "\n".join(self.lines)

    def stderr(self) -> str:
        """What the process wrote to stderr so far (complete once it has exited)."""
        if self.process.poll() is not None:
            for reader in self._readers:
                reader.join(timeout=5)
        return "\n".join(self.stderr_lines)

    def kill(self) -> None:
        """SIGKILL when still running (test clean-up)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
