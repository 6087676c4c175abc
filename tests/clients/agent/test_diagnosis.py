"""Diagnosis from where the service runs: console-agent's DNS → TCP → TLS steps against the lab's
listeners give the console's cause codes; a failed acknowledgement carries them, the console keeps
them beside its own check (same cause codes) and shows them on the services list and the roll-out view;
steps the console cannot read are refused with a field error and nothing saved."""
from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.clients.live_console import LiveConsole
from tests.conftest import add_user, login

from .conftest import AGENT_DIR

if str(AGENT_DIR) not in sys.path:
    sys.path.insert(0, str(AGENT_DIR))

from console_agent.diagnose import diagnose, node_steps  # noqa: E402


@pytest.mark.parametrize("listener, tls, ca, cause, failed_step", [
    ("mqtt.plain", False, False, "ok", None),
    ("mqtt.tls", True, True, "ok", None),
    ("mqtt.tls", True, False, "tls_untrusted", "tls"),
    ("mqtt.tls_expired", True, True, "tls_expired", "tls"),
    ("mqtt.tls_wronghost", True, True, "tls_hostname_mismatch", "tls"),
    ("mqtt.tls_notyet", True, True, "tls_not_yet_valid", "tls"),
    ("rabbitmq.plain", True, True, "tls_not_offered", "tls"),        # answers in plain AMQP
    ("mqtt.plain", True, True, "connection_closed", "tls"),          # Mosquitto resets, not a word
    ("faults.refused", False, False, "connection_refused", "tcp"),
    ("faults.syn_drop", False, False, "connect_timeout", "tcp"),
])
def test_the_network_steps_name_the_consoles_causes(lab: dict, listener: str, tls: bool, ca: bool,
                                                     cause: str, failed_step: str | None) -> None:
    group, name = listener.split(".")
    port = lab["faults"][name] if group == "faults" else lab["brokers"][group][name]
    pem = Path(lab["certs"]["ca"]).read_text() if ca else None
    result = node_steps(f"localhost:{port}" if tls else f"127.0.0.1:{port}", 0, tls, pem, timeout=1.5)
    assert result["cause"] == cause, result
    assert result["ok"] is (cause == "ok")
    failed = [s["name"] for s in result["steps"] if s["status"] == "failed"]
    assert failed == ([failed_step] if failed_step else []), result


def test_a_name_that_does_not_resolve_is_dns_failure() -> None:
    result = node_steps("nothing-here.invalid:1883", 0, False)
    assert result["cause"] == "dns_failure" and [s["status"] for s in result["steps"]] == [
        "failed", "skipped", "skipped"]


def test_one_node_that_answers_is_enough_and_the_others_are_warnings(lab: dict) -> None:
    document = {"protocol": "kafka", "brokers": {"kafka": {
        "nodes": [f"127.0.0.1:{lab['faults']['refused']}", f"127.0.0.1:{lab['brokers']['kafka']['plain']}"],
        "tls_active": False}}}
    result = diagnose(document)
    assert result is not None and result["ok"] and result["cause"] == "ok"
    assert result["warnings"] == [{"code": "node_unreachable", "node": f"127.0.0.1:{lab['faults']['refused']}",
                                   "detail": "connection_refused"}]


PROGRAM = textwrap.dedent("""
    import os, sys, time
    if os.environ.get("SP_MQTT_USERNAME") == "broken":
        print("cannot connect to", os.environ["SP_MQTT_PORT"], file=sys.stderr, flush=True)
        sys.exit(3)
    print("up on", os.environ["SP_MQTT_PORT"], flush=True)
    time.sleep(3600)
""")


def test_a_failed_acknowledgement_carries_the_steps_from_the_services_host_beside_the_consoles_check(
        console: LiveConsole, lab: dict, token_file: Path, tmp_path: Path, run_agent) -> None:
    good_port, refused = lab["brokers"]["mqtt"]["plain"], lab["faults"]["refused"]
    console.change("mqtt", enabled=True, host="127.0.0.1", port=good_port)
    program = tmp_path / "program.py"
    program.write_text(PROGRAM)
    agent = run_agent("exec", "--console", console.url, "--token-file", str(token_file), "--service", "edge",
                      "--protocols", "mqtt", "--format", "streampipes", "--state-dir", str(tmp_path / "s"),
                      "--poll", "0.2", "--settle", "0.5", "--", sys.executable, str(program))
    agent.wait_output(f"up on {good_port}")
    bad = console.change("mqtt", port=refused, username="broken")
    ack = console.wait_ack("edge", bad)
    assert ack["status"] == "failed"
    diag = ack["diagnosis"]
    assert diag["agent"]["protocol"] == "mqtt" and diag["agent"]["cause"] == "connection_refused"
    assert diag["agent"]["nodes"][0]["node"] == f"127.0.0.1:{refused}"
    assert [s["name"] for s in diag["agent"]["steps"]] == ["dns", "tcp", "tls"]
    assert diag["console"] is None            # this console has not checked MQTT
    assert diag["summary"] == (f"The console has not checked this protocol yet; edge cannot: "
                               f"127.0.0.1:{refused}: connection_refused at TCP.")

    add_user(console.app, "ops", "admin", "a-long-password-1")
    client = login(console.app.test_client(), "ops", "a-long-password-1")
    for path in ("/adapters/rollout", "/adapters"):
        page = client.get(path).get_data(as_text=True)
        assert f"edge cannot: 127.0.0.1:{refused}: connection_refused at TCP." in page, path
        assert 'data-cause="connection_refused"' in page

    fixed = console.change("mqtt", port=good_port, username="alice")
    assert console.wait_ack("edge", fixed)["diagnosis"] is None       # applied: nothing to show


@pytest.mark.parametrize("diagnosis", [
    {"protocol": "mqtt", "ok": False, "cause": "no_such_cause", "steps": []},
    {"protocol": "mqtt", "ok": False, "cause": "connection_refused", "steps": [{"name": "auth", "status": "ok"}]},
    {"protocol": "smtp", "ok": False, "cause": "connection_refused"},
    {"protocol": "mqtt", "ok": False, "cause": "connection_refused", "nodes": [{"node": "x" * 10, "cause": "ok",
                                                                                "steps": "dns"}]},
    {"protocol": "mqtt", "ok": False, "cause": "ok", "from": "x" * 20_000},
    "steps",
])
def test_steps_the_console_cannot_read_are_refused_and_nothing_is_saved(
        console: LiveConsole, token_file: Path, diagnosis) -> None:
    token = token_file.read_text().strip()
    console.change("mqtt", enabled=True, host="127.0.0.1", port=1883)
    status, _ = console.api("POST", "/api/v1/services", {"name": "edge", "protocols": ["mqtt"]}, token=token)
    assert status in (200, 201)
    version = console.target("edge")
    status, body = console.api("POST", "/api/v1/services/edge/ack",
                               {"version": version, "status": "failed", "message": "x", "diagnosis": diagnosis},
                               token=token)
    assert status == 422 and "diagnosis" in body["errors"], body
    assert console.service("edge")["rollout"]["acknowledged"]["version"] is None


def test_asked_from_the_page_the_agent_runs_the_steps_without_touching_the_program(
        console: LiveConsole, lab: dict, token_file: Path, tmp_path: Path, run_agent) -> None:
    """Issue 16 item 5, on request: the admin asks, the agent's held watch ends at once, it runs the
    network steps from its host and sends them; the program keeps running (no restart, no ack)."""
    good_port, refused = lab["brokers"]["mqtt"]["plain"], lab["faults"]["refused"]
    version = console.change("mqtt", enabled=True, host="127.0.0.1", port=good_port)
    program = tmp_path / "program.py"
    program.write_text(PROGRAM)
    agent = run_agent("exec", "--console", console.url, "--token-file", str(token_file), "--service", "edge",
                      "--protocols", "mqtt", "--format", "streampipes", "--state-dir", str(tmp_path / "s"),
                      "--wait", "120", "--settle", "0.5", "--", sys.executable, str(program))
    agent.wait_output(f"up on {good_port}")
    console.wait_ack("edge", version)
    time.sleep(0.5)                         # the agent's watch is held now
    status, asked = console.api("POST", "/api/v1/services/edge/diagnose")
    assert status == 202, asked
    started = time.monotonic()
    while (kept := console.service("edge")["requested_diagnosis"]) is None:
        assert time.monotonic() - started < 20, agent.stderr()
        time.sleep(0.1)
    assert time.monotonic() - started < 10     # the held watch (120 s) ended for it
    assert kept["request"] == asked["diagnosis_request"]["request"]
    assert kept["agent"]["protocol"] == "mqtt" and kept["agent"]["ok"] is True
    assert kept["agent"]["nodes"][0]["node"] == f"127.0.0.1:{good_port}"
    assert kept["summary"].startswith("The console has not checked this protocol yet; edge reaches "
                                      f"127.0.0.1:{good_port} too (DNS, TCP)")
    assert "the console asked for a diagnosis: mqtt from" in agent.stderr()
    assert agent.stdout().count("up on") == 1                 # the program was not restarted
    assert console.service("edge")["diagnosis_request"] is None

    # the console cannot reach what the service is given: the steps say where it fails, from its host
    console.api("PATCH", "/api/v1/brokers/mqtt", {"port": refused, "confirm": True})
    agent.wait_output(f"up on {refused}")         # the program runs on it (it never connects)
    status, asked = console.api("POST", "/api/v1/services/edge/diagnose")
    started = time.monotonic()
    while (kept := console.service("edge")["requested_diagnosis"])["request"] != \
            asked["diagnosis_request"]["request"]:
        assert time.monotonic() - started < 20, agent.stderr()
        time.sleep(0.1)
    assert kept["agent"]["cause"] == "connection_refused"
    assert f"edge cannot: 127.0.0.1:{refused}: connection_refused at TCP." in kept["summary"]
