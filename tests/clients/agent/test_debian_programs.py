"""Programs no one here wrote, run unmodified under console-agent against the broker lab: Debian's
`mosquitto_sub` (mosquitto-clients), `kcat` (package kafkacat) and `amqp-consume` (amqp-tools).

For each: a change of the broker address through the console's API moves the program to a second real
broker (a second Mosquitto, a second Tansu, a second RabbitMQ vhost) and a message published there
reaches the program's output; a wrong password is acknowledged `failed` in the program's own words
while the previous settings keep running; and with the console stopped for 30 s the programs keep
running and the agents catch up when it is back.

kcat: Debian's librdkafka 2.0.2 cannot read the ApiVersions v3 answer of Tansu, the lab's Kafka
("Protocol read buffer underflow for ApiVersion v3"); a real Kafka broker does not need this, but here
the unmodified kcat 1.7.1 binary loads librdkafka 2.16 — the one confluent-kafka ships in the venv —
through LD_LIBRARY_PATH. The lab's SASL Tansu stores no credentials, so every login to it is refused:
the wrong-password step sends kcat there with SASL and a password.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.clients.live_console import LiveConsole

from .conftest import AgentProcess

CONSOLE_AWAY = 30.0            # seconds the console is stopped (issue 16)


def _kcat() -> str | None:
    return shutil.which("kcat") or shutil.which("kafkacat")


def _librdkafka_dir(tmp: Path) -> dict[str, str]:
    """LD_LIBRARY_PATH with confluent-kafka's librdkafka as librdkafka.so.1 (see the module's note)."""
    import confluent_kafka
    libs = sorted((Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs").glob("librdkafka-*.so*"))
    assert libs, "confluent-kafka's bundled librdkafka not found"
    folder = tmp / "librdkafka"
    folder.mkdir(exist_ok=True)
    link = folder / "librdkafka.so.1"
    if not link.exists():
        link.symlink_to(libs[0])
    return {"LD_LIBRARY_PATH": str(folder)}


needs_programs = pytest.mark.skipif(
    not (shutil.which("mosquitto_sub") and _kcat() and shutil.which("amqp-consume")),
    reason="mosquitto-clients, kafkacat and amqp-tools are installed by scripts/system-deps.sh (make test)")


@dataclass
class Program:
    """One Debian program, how it is run under the agent, and its two brokers."""

    service: str
    protocol: str
    format: str
    command: str                                  # sh -c script, settings from the environment
    first: dict[str, Any]
    second: dict[str, Any]                        # the change that moves it to the second broker
    wrong: dict[str, Any]                         # a wrong password
    words: tuple[str, ...]                        # the program's own words for a refused login
    settle: float
    publish: Callable[[bool, str], None]          # (on the second broker?, message)


def _run(args: list[str], env: dict[str, str] | None = None, stdin: str | None = None) -> None:
    done = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=30,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, (args, done.stdout, done.stderr)


def programs(lab: dict, tmp: Path) -> dict[str, Program]:
    m, k, r = lab["brokers"]["mqtt"], lab["brokers"]["kafka"], lab["brokers"]["rabbitmq"]
    host = "127.0.0.1"
    kafka_env = _librdkafka_dir(tmp)
    kcat = _kcat() or "kcat"
    topic = "agent-demo"

    def mqtt_publish(second: bool, text: str) -> None:
        _run(["mosquitto_pub", "-h", host, "-p", str(m["restricted"] if second else m["plain_auth"]),
              "-u", m["username"], "-P", m["password"], "-t", "demo/agent", "-m", text])

    def kafka_publish(second: bool, text: str) -> None:
        _run([kcat, "-b", f"{host}:{k['second'] if second else k['plain']}", "-P", "-t", topic], kafka_env,
             text + "\n")

    def amqp_publish(second: bool, text: str) -> None:
        vhost = r["second_vhost"] if second else r["vhost"]
        _run(["amqp-publish", "--url", f"amqp://{r['username']}:{r['password']}@{host}:{r['plain']}/{vhost}",
              "-e", "amq.topic", "-r", "agent.demo", "-b", text + "\n"])

    return {
        "mosquitto_sub": Program(
            "mqtt-sub", "mqtt", "streampipes",
            'exec mosquitto_sub -h "$SP_MQTT_HOST" -p "$SP_MQTT_PORT" -u "$SP_MQTT_USERNAME" '
            '-P "$SP_MQTT_PASSWORD" -t "demo/#"',
            {"enabled": True, "host": host, "port": m["plain_auth"], "username": m["username"],
             "password": m["password"]},
            {"port": m["restricted"]}, {"password": "wrong-" + uuid.uuid4().hex[:8]},
            ("Connection Refused: not authorised",), 2.0, mqtt_publish),
        "kcat": Program(
            "kafka-sub", "kafka", "streampipes",
            f'exec {kcat} -b "$SP_KAFKA_HOST:$SP_KAFKA_PORT" '
            '${SP_KAFKA_SECURITY_PROTOCOL:+-X security.protocol=$SP_KAFKA_SECURITY_PROTOCOL} '
            '${SP_KAFKA_SASL_MECHANISM:+-X sasl.mechanism=$SP_KAFKA_SASL_MECHANISM} '
            '${SP_KAFKA_USERNAME:+-X sasl.username=$SP_KAFKA_USERNAME} '
            '${SP_KAFKA_PASSWORD:+-X sasl.password=$SP_KAFKA_PASSWORD} '
            f'-C -t {topic} -o end -u',
            {"enabled": True, "host": host, "port": k["plain"]},
            {"port": k["second"]},
            {"port": k["sasl"], "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256",
             "username": "labuser", "password": "wrong-" + uuid.uuid4().hex[:8]},
            ("SASL authentication error",), 8.0, kafka_publish),
        "amqp-consume": Program(
            "amqp-sub", "rabbitmq", "gateway",
            'exec amqp-consume --url "$RABBIT_SERVER_URL" -e amq.topic -r agent.demo cat',
            {"enabled": True, "host": host, "port": r["plain"], "username": r["username"],
             "password": r["password"], "vhost": r["vhost"]},
            {"vhost": r["second_vhost"]}, {"password": "wrong-" + uuid.uuid4().hex[:8]},
            ("ACCESS_REFUSED",), 2.0, amqp_publish),
    }


def _start(console: LiveConsole, program: Program, run_agent, tmp: Path, url: str | None = None) -> AgentProcess:
    token = tmp / f"{program.service}.token"
    if not token.exists():
        token.write_text(console.token(f"{program.service}-token", program.service))
    env = _librdkafka_dir(tmp) if program.protocol == "kafka" else {}
    return run_agent("exec", "--console", url or console.url, "--token-file", str(token),
                     "--service", program.service, "--protocols", program.protocol,
                     "--format", program.format, "--state-dir", str(tmp / f"state-{program.service}"),
                     "--settle", str(program.settle), "--poll", "0.5", "--retry-max", "2", "--wait", "5",
                     "--", "sh", "-c", program.command, env=env)


def _seen(agent: AgentProcess, program: Program, second: bool, timeout: float = 30) -> str:
    """Publish a new message on the first or second broker until the program prints it."""
    marker = f"msg-{uuid.uuid4().hex[:10]}"
    deadline = time.monotonic() + timeout
    while marker not in agent.stdout():
        assert agent.process.poll() is None, agent.stderr()[-2000:]
        if time.monotonic() > deadline:
            raise AssertionError(f"{marker} published on the {'second' if second else 'first'} broker "
                                 f"never reached {program.service}'s output:\n{agent.stdout()[-1500:]}\n"
                                 f"{agent.stderr()[-1500:]}")
        program.publish(second, marker)
        time.sleep(0.5)
    return marker


def _registered(console: LiveConsole, name: str, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while console.api("GET", f"/api/v1/services/{name}")[0] == 404:
        assert time.monotonic() < deadline, f"{name} never registered"
        time.sleep(0.05)
    return console.target(name)


def _prepare(lab: dict, tmp: Path, program: Program) -> None:
    if program.protocol == "kafka":        # the topic exists on both brokers before kcat reads it
        program.publish(False, "init")
        program.publish(True, "init")


@needs_programs
@pytest.mark.parametrize("name", ["mosquitto_sub", "kcat", "amqp-consume"])
def test_a_changed_address_moves_the_program_and_a_wrong_password_fails_in_its_own_words(
        console: LiveConsole, lab: dict, tmp_path: Path, run_agent, name: str) -> None:
    program = programs(lab, tmp_path)[name]
    _prepare(lab, tmp_path, program)
    console.change(program.protocol, **program.first)
    agent = _start(console, program, run_agent, tmp_path)
    first = console.wait_ack(program.service, _registered(console, program.service), timeout=40)
    assert first["status"] == "applied", first
    _seen(agent, program, second=False)

    moved = console.change(program.protocol, **program.second)
    ack = console.wait_ack(program.service, moved, timeout=40)
    assert ack["status"] == "applied", ack
    _seen(agent, program, second=True)

    wrong = console.change(program.protocol, **program.wrong)
    ack = console.wait_ack(program.service, wrong, timeout=60)
    assert ack["status"] == "failed", ack
    assert any(words in ack["message"] for words in program.words), ack["message"]
    assert program.wrong["password"] not in ack["message"]
    assert program.wrong["password"] not in agent.stderr()
    assert f"went back to v{moved}" in ack["message"], ack["message"]
    _seen(agent, program, second=True)            # the previous settings run again
    assert agent.process.poll() is None


@needs_programs
def test_the_programs_keep_running_while_the_console_is_stopped_for_30_s_and_the_agents_catch_up(
        console: LiveConsole, lab: dict, tmp_path: Path, run_agent) -> None:
    every = programs(lab, tmp_path)
    agents = {}
    for program in every.values():
        _prepare(lab, tmp_path, program)
        console.change(program.protocol, **program.first)
    for name, program in every.items():
        agents[name] = _start(console, program, run_agent, tmp_path)
    for name, program in every.items():
        assert console.wait_ack(program.service, _registered(console, program.service),
                                timeout=40)["status"] == "applied"
        _seen(agents[name], program, second=False)
    pids = {name: _child_pids(agent) for name, agent in agents.items()}

    url, port = console.url, console.port
    console.stop()
    time.sleep(CONSOLE_AWAY)
    versions = {}
    for name, program in every.items():
        assert agents[name].process.poll() is None, agents[name].stderr()[-2000:]
        assert "cannot be reached" in agents[name].stderr()
        _seen(agents[name], program, second=False)            # still on the first broker
        assert _child_pids(agents[name]) == pids[name]        # never restarted
        versions[name] = console.change(program.protocol, **program.second)   # saved while away
    console.start(port)
    assert console.url == url
    for name, program in every.items():
        ack = console.wait_ack(program.service, versions[name], timeout=60)
        assert ack["status"] == "applied", ack
        _seen(agents[name], program, second=True)
        assert "caught up" in agents[name].stderr()


def _child_pids(agent: AgentProcess) -> list[int]:
    """The processes the agent runs (its children)."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(agent.process.pid)], capture_output=True,
                         text=True).stdout
    return sorted(int(p) for p in out.split())
