"""Fixtures for console-agent: the real console on a loopback port (tests/clients/live_console.py), a
service token in a file, and `run_agent`, which starts `python -m console_agent` from clients/agent as
its own process (standard library only, as installed by `pip install clients/agent`)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.clients.live_console import LiveConsole, console  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[3]
AGENT_DIR = ROOT / "clients" / "agent"


class AgentProcess:
    """One console-agent process: its output files, its end."""

    def __init__(self, args: list[str], workdir: Path, env: dict[str, str] | None = None) -> None:
        self.out, self.err = workdir / "agent.out", workdir / "agent.err"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "console_agent", *args], cwd=workdir,
            env={**os.environ, "PYTHONPATH": str(AGENT_DIR), "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=self.out.open("wb"), stderr=self.err.open("wb"), start_new_session=True)

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def wait_output(self, text: str, timeout: float = 30, stream: str = "stdout", count: int = 1) -> str:
        """Wait until `text` appears (`count` times) on the agent's stdout (the program's) or stderr."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.stdout() if stream == "stdout" else self.stderr()
            if seen.count(text) >= count:
                return seen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not on the agent's {stream} within {timeout} s:\n"
                                     f"--- stdout\n{self.stdout()[-3000:]}\n--- stderr\n{self.stderr()[-3000:]}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


@pytest.fixture
def token_file(console: LiveConsole, tmp_path: Path) -> Path:
    """A file with a service token for `edge`."""
    path = tmp_path / "edge.token"
    path.write_text(console.token("edge-token", "edge") + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def run_agent(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """Start console-agent with the given arguments; every one started is stopped at the end."""
    started: list[AgentProcess] = []

    def run(*args: str, env: dict[str, str] | None = None) -> AgentProcess:
        workdir = tmp_path / f"agent{len(started)}"
        workdir.mkdir()
        agent = AgentProcess(list(args), workdir, env)
        started.append(agent)
        return agent

    yield run
    for agent in started:
        agent.stop()
