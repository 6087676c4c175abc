"""console-agent against the real console on a loopback port, with a small program of its own as the
child (the Debian programs run in test_debian_programs.py): exec restarts on a change and acknowledges
after --settle, a failing version is acknowledged `failed` in the program's words and the last version
that ran comes back, the console away leaves the program running and the agent catches up, the last
document on disk starts the program when the agent starts without a console, render and once write
files, and a field the format cannot carry stops the agent with one line."""
from __future__ import annotations

import json
import stat
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.clients.live_console import LiveConsole

from .conftest import AgentProcess

PROGRAM = textwrap.dedent("""
    import os, signal, sys, time
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    host, port, user = os.environ["SP_MQTT_HOST"], os.environ["SP_MQTT_PORT"], os.environ.get("SP_MQTT_USERNAME")
    if user == "broken":
        print("connecting to", host, port, file=sys.stderr, flush=True)
        print("Connection Refused: not authorised for password", os.environ.get("SP_MQTT_PASSWORD"),
              file=sys.stderr, flush=True)
        sys.exit(5)
    print(f"running on {host}:{port} as {user}", flush=True)
    while True:
        time.sleep(0.1)
""")


def _common(console: LiveConsole | str, token_file: Path, tmp_path: Path,
            fmt: str = "streampipes") -> list[str]:
    return ["--console", console if isinstance(console, str) else console.url, "--token-file",
            str(token_file), "--service", "edge", "--protocols", "mqtt", "--format", fmt,
            "--state-dir", str(tmp_path / "state"), "--poll", "0.2", "--retry-max", "1"]


def target(console: LiveConsole, name: str = "edge", timeout: float = 20) -> int:
    """The version `name` should run, once the agent has registered it."""
    deadline = time.monotonic() + timeout
    while console.api("GET", f"/api/v1/services/{name}")[0] == 404:
        assert time.monotonic() < deadline, f"{name} not registered within {timeout} s"
        time.sleep(0.05)
    return console.target(name)


def _exec(console: LiveConsole | str, token_file: Path, tmp_path: Path, run_agent, *extra: str) -> AgentProcess:
    program = tmp_path / "program.py"
    program.write_text(PROGRAM)
    return run_agent("exec", *_common(console, token_file, tmp_path), "--settle", "0.5", *extra,
                     "--", sys.executable, str(program))


def test_exec_runs_the_program_restarts_it_on_a_change_and_acknowledges(
        console: LiveConsole, token_file: Path, tmp_path: Path, run_agent) -> None:
    first = console.change("mqtt", enabled=True, host="127.0.0.1", port=11883, username="alice")
    agent = _exec(console, token_file, tmp_path, run_agent)
    agent.wait_output("running on 127.0.0.1:11883 as alice")
    ack = console.wait_ack("edge", target(console))
    assert ack["status"] == "applied" and "runs (pid" in ack["message"], ack
    assert target(console) >= first
    second = console.change("mqtt", port=11884)
    agent.wait_output("running on 127.0.0.1:11884 as alice")
    assert console.wait_ack("edge", second)["status"] == "applied"
    state = tmp_path / "state" / "last.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert json.loads(state.read_text())["version"] == second


def test_a_failing_version_is_acknowledged_in_the_programs_words_and_the_last_good_one_runs_again(
        console: LiveConsole, token_file: Path, tmp_path: Path, run_agent) -> None:
    console.change("mqtt", enabled=True, host="127.0.0.1", port=11883, username="alice")
    agent = _exec(console, token_file, tmp_path, run_agent)
    agent.wait_output("running on 127.0.0.1:11883 as alice")
    good = console.wait_ack("edge", target(console))
    bad = console.change("mqtt", username="broken", password="hunter2-secret")
    ack = console.wait_ack("edge", bad)
    assert ack["status"] == "failed"
    assert "exited with status 5" in ack["message"], ack
    assert "Connection Refused: not authorised" in ack["message"], ack
    assert "hunter2-secret" not in ack["message"] and "***" in ack["message"]
    assert f"went back to v{good['version']}" in ack["message"]
    agent.wait_output("running on 127.0.0.1:11883 as alice", count=2)        # the good one, again
    assert "hunter2-secret" not in agent.stderr().replace(
        "Connection Refused: not authorised for password hunter2-secret", "")   # the program's own line
    assert agent.process.poll() is None                                          # no restart loop
    fixed = console.change("mqtt", username="bob")
    agent.wait_output("running on 127.0.0.1:11883 as bob")
    assert console.wait_ack("edge", fixed)["status"] == "applied"


def test_the_program_keeps_running_while_the_console_is_away_and_the_agent_catches_up(
        console: LiveConsole, token_file: Path, tmp_path: Path, run_agent) -> None:
    console.change("mqtt", enabled=True, host="127.0.0.1", port=11883, username="alice")
    agent = _exec(console, token_file, tmp_path, run_agent)
    agent.wait_output("running on 127.0.0.1:11883 as alice")
    console.wait_ack("edge", target(console))
    port = console.port
    console.stop()
    agent.wait_output("cannot be reached", stream="stderr")
    assert agent.process.poll() is None
    assert agent.stdout().count("running on") == 1                 # not restarted
    changed = console.change("mqtt", port=11884)                   # saved while nothing serves
    console.start(port)
    agent.wait_output("running on 127.0.0.1:11884 as alice")
    assert console.wait_ack("edge", changed)["status"] == "applied"
    assert "caught up" in agent.stderr()


def test_the_last_document_on_disk_starts_the_program_without_the_console(
        console: LiveConsole, token_file: Path, tmp_path: Path, run_agent) -> None:
    console.change("mqtt", enabled=True, host="127.0.0.1", port=11883, username="alice")
    agent = _exec(console, token_file, tmp_path, run_agent)
    agent.wait_output("running on 127.0.0.1:11883 as alice")
    console.wait_ack("edge", target(console))
    assert agent.stop() == 0
    url = console.url
    console.stop()
    again = _exec(url, token_file, tmp_path, run_agent)
    again.wait_output("running on 127.0.0.1:11883 as alice")
    assert "the last version that ran here" in again.stderr()
    assert "cannot be reached" in again.wait_output("cannot be reached", stream="stderr")


def test_the_agent_forwards_termination_and_exits_with_the_program(
        console: LiveConsole, token_file: Path, tmp_path: Path, run_agent) -> None:
    console.change("mqtt", enabled=True, host="127.0.0.1", port=11883)
    program = tmp_path / "short.py"
    program.write_text("import os, time\nprint('up', os.environ['SP_MQTT_PORT'], flush=True)\n"
                       "time.sleep(1.5)\nraise SystemExit(7)\n")
    agent = run_agent("exec", *_common(console, token_file, tmp_path), "--settle", "0.5", "--",
                      sys.executable, str(program))
    agent.wait_output("up 11883")
    assert agent.process.wait(20) == 7


def test_render_writes_the_file_atomically_and_acknowledges_by_on_change(
        console: LiveConsole, token_file: Path, tmp_path: Path, run_agent) -> None:
    console.change("mqtt", enabled=True, host="127.0.0.1", port=11883, username="alice", password="pw1")
    out = tmp_path / "edge.env"
    agent = run_agent("render", *_common(console, token_file, tmp_path, "dotenv"), "--out", str(out),
                      "--on-change", f'grep -q "SP_MQTT_PORT=1188[34]" {out} || '
                                     '{ echo "port $SP_MQTT_PORT is not ours" >&2; exit 3; }')
    version = target(console)
    assert console.wait_ack("edge", version)["status"] == "applied"
    text = out.read_text()
    assert "SP_MQTT_HOST=127.0.0.1\n" in text and "SP_MQTT_PASSWORD=pw1\n" in text
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    bad = console.change("mqtt", port=1999)
    ack = console.wait_ack("edge", bad)
    assert ack["status"] == "failed" and "status 3" in ack["message"] and "port 1999 is not ours" in ack["message"]
    assert f"went back to v{version}" in ack["message"]
    assert "SP_MQTT_PORT=11883\n" in out.read_text()
    assert agent.process.poll() is None


def test_once_prints_or_writes_and_uses_the_last_document_when_the_console_is_away(
        console: LiveConsole, token_file: Path, tmp_path: Path, run_agent) -> None:
    console.change("mqtt", enabled=True, host="127.0.0.1", port=11883)
    agent = run_agent("once", *_common(console, token_file, tmp_path))
    assert agent.process.wait(20) == 0
    assert "SP_MQTT_PORT=11883" in agent.stdout() and "SP_PRIORITIZED_PROTOCOL=mqtt" in agent.stdout()
    url = console.url
    console.stop()
    out = tmp_path / "edge.json"
    away = run_agent("once", *_common(url, token_file, tmp_path, "json"), "--out", str(out))
    assert away.process.wait(30) == 0
    assert json.loads(out.read_text())["brokers"]["mqtt"]["port"] == 11883
    assert "using v" in away.stderr()


@pytest.mark.parametrize("fmt", ["roboconf", "gateway"])
def test_a_field_the_format_cannot_carry_stops_the_agent_with_one_line(
        console: LiveConsole, token_file: Path, tmp_path: Path, run_agent, fmt: str) -> None:
    console.change("mqtt", enabled=True, host="127.0.0.1", port=11883)
    agent = run_agent("exec", *_common(console, token_file, tmp_path, fmt), "--", "true")
    assert agent.process.wait(20) == 2
    lines = [ln for ln in agent.stderr().splitlines() if "cannot carry" in ln]
    assert lines == [f"console-agent: format {fmt} cannot carry mqtt.* ("
                     + ("Roboconf reads RabbitMQ only" if fmt == "roboconf" else
                        "the gateway reads Kafka, NATS and RabbitMQ only")
                     + "); choose a format that can (streampipes, dotenv, json or a template)"], agent.stderr()
    ack = console.wait_ack("edge", target(console))
    assert ack["status"] == "failed" and "cannot carry mqtt.*" in ack["message"]
