"""The README's waves example with real programs: Debian's mosquitto_sub under console-agent for two
services, `canary` and `edge`; the README's curl lines, as shown, PATCH a password the lab's Mosquitto
refuses with a plan whose first wave is the canary, read the roll-out and roll it back. The canary's
program refuses the new password in its own words, its agent acknowledges `failed` and goes back to the
version that ran, the roll-out halts, and `edge` is never served the bad version: its program is never
restarted. The rollback brings both to a version they apply."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.clients.live_console import LiveConsole
from tests.test_readme import wave_lines

PROGRAM = ('echo "up $SP_MQTT_PORT"; exec mosquitto_sub -h "$SP_MQTT_HOST" -p "$SP_MQTT_PORT" '
           '-u "$SP_MQTT_USERNAME" -P "$SP_MQTT_PASSWORD" -t "demo/#"')


def _curl(line: str, console: LiveConsole, admin: str) -> dict:
    env = {**os.environ, "API": f"{console.url}/api/v1", "ADMIN_TOKEN": admin,
           "JSON": "Content-Type: application/json"}
    done = subprocess.run(["sh", "-c", line], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (line, done.stderr)
    return json.loads(done.stdout)


def _state(console: LiveConsole, name: str) -> dict:
    return console.service(name)["rollout"]


@pytest.mark.skipif(not shutil.which("mosquitto_sub"), reason="mosquitto-clients: scripts/system-deps.sh")
def test_a_bad_password_on_the_canary_halts_the_wave(console: LiveConsole, lab: dict, tmp_path: Path,
                                                      run_agent) -> None:
    patch, current, rollback = wave_lines()
    m = lab["brokers"]["mqtt"]
    console.change("mqtt", enabled=True, host="127.0.0.1", port=m["plain_auth"], username=m["username"],
                   password=m["password"])
    agents = {}
    for name in ("canary", "edge"):
        token = tmp_path / f"{name}.token"
        token.write_text(console.token(f"{name}-token", name))
        agents[name] = run_agent("exec", "--console", console.url, "--token-file", str(token),
                                 "--service", name, "--protocols", "mqtt", "--format", "streampipes",
                                 "--state-dir", str(tmp_path / f"state-{name}"), "--settle", "2",
                                 "--poll", "0.3", "--", "sh", "-c", PROGRAM)
    for name, agent in agents.items():
        agent.wait_output(f"up {m['plain_auth']}")
        deadline = time.monotonic() + 40
        while _state(console, name)["state"] != "applied":
            assert time.monotonic() < deadline, _state(console, name)
            time.sleep(0.1)
    good = _state(console, "edge")["acknowledged"]["version"]

    answer = _curl(patch, console, console.admin_token)
    new = answer["version"]
    assert answer["rollout"]["wave"] == ["canary"] and answer["rollout"]["id"] == 1, answer
    ack = console.wait_ack("canary", new, timeout=40)
    assert ack["status"] == "failed" and "Connection Refused: not authorised" in ack["message"], ack
    assert "n3w-pass" not in ack["message"] and f"went back to v{good}" in ack["message"]
    deadline = time.monotonic() + 20
    while (rollout := _curl(current, console, console.admin_token)["rollout"])["state"] != "halted":
        assert time.monotonic() < deadline, rollout
        time.sleep(0.2)
    assert "canary failed" in rollout["reason"] and "not authorised" in rollout["reason"], rollout
    assert rollout["held"] == ["edge"]
    edge = _state(console, "edge")
    assert edge["acknowledged"]["version"] == good and edge["acknowledged"]["status"] == "applied"
    assert agents["edge"].stdout().count("up ") == 1                 # never restarted
    agents["canary"].wait_output(f"up {m['plain_auth']}", count=2)   # the good version runs again

    back = _curl(rollback, console, console.admin_token)
    assert back["rollout"]["state"] in ("rolled_back", "done", "complete", "completed"), back
    for name in ("canary", "edge"):
        deadline = time.monotonic() + 40
        while _state(console, name)["state"] != "applied":
            assert time.monotonic() < deadline, _state(console, name)
            time.sleep(0.1)
    assert agents["edge"].process.poll() is None and agents["canary"].process.poll() is None
