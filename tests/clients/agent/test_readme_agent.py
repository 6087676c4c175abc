"""Every console-agent line of the README's "Running a service that cannot be changed", run as shown
and in order: `pip install clients/agent` into a fresh virtual environment, the token file, then each
`console-agent` command from that environment against the real console (its URL in place of
http://127.0.0.1:8000) and the broker lab — Debian's mosquitto_sub and amqp-consume receive a message
published on the lab's brokers, the Roboconf file, the dotenv file and the template are written, and
the diagnosis answers."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.clients.live_console import LiveConsole
from tests.test_readme import ROOT, agent_lines

README_URL = "http://127.0.0.1:8000"


class Shell:
    """Runs README lines with `sh`, in one working directory, with the venv first on PATH and $TOKEN."""

    def __init__(self, workdir: Path, venv: Path, token: str, url: str) -> None:
        self.workdir, self.url = workdir, url
        home = workdir.parent / "home"           # ~/.console-agent/<service> lands here
        home.mkdir(exist_ok=True)
        self.env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "TOKEN": token,
                    "HOME": str(home)}
        self.prelude = ""
        self.ran: list[str] = []

    def script(self, line: str) -> str:
        return self.prelude + line.replace(README_URL, self.url)

    def run(self, line: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["sh", "-c", self.script(line)], cwd=cwd or self.workdir, env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, (line, done.stdout[-2000:], done.stderr[-2000:])
        self.ran.append(line)
        return done

    def start(self, line: str) -> tuple[subprocess.Popen[bytes], Path]:
        out = self.workdir / f"out-{len(self.ran)}.txt"
        process = subprocess.Popen(["sh", "-c", self.script(line)], cwd=self.workdir, env=self.env,
                                   stdout=out.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        self.ran.append(line)
        return process, out


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _applied(console: LiveConsole, protocols: list[str], out: Path, timeout: float = 40) -> None:
    """Wait until `edge` (registered with `protocols`) acknowledged its current document applied."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = console.api("GET", "/api/v1/services/edge")
        if status == 200 and body["protocols"] == protocols and body["rollout"]["state"] == "applied":
            return
        assert time.monotonic() < deadline, (body["rollout"], out.read_text(errors="replace")[-3000:])
        time.sleep(0.1)


def _until_seen(out: Path, publish: list[str], timeout: float = 30) -> None:
    marker = f"readme-{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + timeout
    while marker not in out.read_text(errors="replace"):
        assert time.monotonic() < deadline, out.read_text(errors="replace")[-2000:]
        subprocess.run([*publish, marker], capture_output=True, timeout=20, check=True)
        time.sleep(0.5)


@pytest.mark.skipif(not (shutil.which("mosquitto_pub") and shutil.which("amqp-publish")),
                    reason="mosquitto-clients and amqp-tools come from scripts/system-deps.sh (make test)")
def test_every_agent_line_of_the_readme_runs(console: LiveConsole, lab: dict, tmp_path: Path) -> None:
    lines = agent_lines()
    assert len(lines) >= 9, lines
    m, r, k = lab["brokers"]["mqtt"], lab["brokers"]["rabbitmq"], lab["brokers"]["kafka"]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    workdir = tmp_path / "work"
    workdir.mkdir()
    shell = Shell(workdir, venv, console.token("edge-token", "edge"), console.url)
    todo = list(lines)

    def take(prefix: str) -> str:
        line = todo.pop(0)
        assert line.startswith(prefix), (prefix, line)
        return line

    shell.run(take("pip install clients/agent"), cwd=ROOT)
    assert (venv / "bin" / "console-agent").exists()
    shell.run(take('echo "$TOKEN" > edge.token'))
    assert (workdir / "edge.token").stat().st_mode & 0o777 == 0o600
    line = take('C="--console ')
    shell.prelude = line.replace(README_URL, console.url) + "\n"     # set for every line after it
    shell.ran.append(line)

    console.change("mqtt", enabled=True, host="127.0.0.1", port=m["plain_auth"], username=m["username"],
                   password=m["password"])
    agent, out = shell.start(take("console-agent exec $C --protocols mqtt"))
    try:
        _applied(console, ["mqtt"], out)
        _until_seen(out, ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(m["plain_auth"]), "-u", m["username"],
                          "-P", m["password"], "-t", "demo/readme", "-m"])
    finally:
        _stop(agent)

    console.change("rabbitmq", enabled=True, host="127.0.0.1", port=r["plain"], username=r["username"],
                   password=r["password"], vhost=r["vhost"])
    agent, out = shell.start(take("console-agent exec $C --protocols rabbitmq --format gateway"))
    try:
        _applied(console, ["rabbitmq"], out)
        url = f"amqp://{r['username']}:{r['password']}@127.0.0.1:{r['plain']}/{r['vhost']}"
        _until_seen(out, ["amqp-publish", "--url", url, "-e", "amq.topic", "-r", "demo", "-b"])
    finally:
        _stop(agent)

    console.change("rabbitmq", vhost="/")            # the Roboconf file has no vhost
    agent, out = shell.start(take("console-agent render $C --protocols rabbitmq --format roboconf"))
    try:
        _applied(console, ["rabbitmq"], out)
        cfg = (workdir / "net.roboconf.messaging.rabbitmq.cfg").read_text()
        assert f"message-server-ip = 127.0.0.1:{r['plain']}\n" in cfg
        assert f"message-server-password = {r['password']}\n" in cfg
        assert "reload roboconf" in out.read_text()
    finally:
        _stop(agent)

    shell.run(take("console-agent once $C --protocols mqtt --format dotenv"))
    assert f"SP_MQTT_PORT={m['plain_auth']}\n" in (workdir / "edge.env").read_text()
    shell.run(take("printf 'bootstrap.servers="))
    console.change("kafka", enabled=True, host="127.0.0.1", port=k["plain"])
    shell.run(take("console-agent once $C --protocols kafka --format template"))
    assert (workdir / "client.properties").read_text() == (
        f"bootstrap.servers=127.0.0.1:{k['plain']}\nsecurity.protocol=\n")
    done = shell.run(take("console-agent diagnose $C --protocols mqtt"))
    result = json.loads(done.stdout)
    assert result["ok"] and result["cause"] == "ok" and result["protocol"] == "mqtt"
    assert todo == [] and set(shell.ran) == set(lines)
