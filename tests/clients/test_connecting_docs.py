"""Every command of docs/connecting-a-service.md and of README.md's "Connecting a service", run as written
(only the console's address, the callback port and the venv's bin directory substituted) against the
real console on real HTTP: curl, the openssl signature check on a callback the console really sent, the
Python client snippets and the example service."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from tests.clients.conftest import ROOT
from tests.clients.live_console import LiveConsole
from tests.delivery.receiver import Receiver, free_port

DOC = ROOT / "docs" / "connecting-a-service.md"
README = ROOT / "README.md"
EXAMPLE_README = ROOT / "examples" / "extension_service" / "README.md"
BIN = str(Path(sys.executable).parent) + "/"


def code_blocks(text: str, language: str) -> list[str]:
    """The fenced blocks of `language` in `text`, in order."""
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def readme_section() -> str:
    """README.md's "Connecting a service" section."""
    text = README.read_text()
    start = text.index("## Connecting a service\n")
    return text[start:text.index("\n## ", start + 1)]


def doc_block(language: str, containing: str) -> str:
    """The one block of the doc in `language` that contains `containing`."""
    found = [b for b in code_blocks(DOC.read_text(), language) if containing in b]
    assert len(found) == 1, f"{len(found)} {language} blocks with {containing!r} in {DOC.name}"
    return found[0]


def localized(code: str, console: LiveConsole, callback_port: int) -> str:
    """`code` pointed at the test's console, callback port and venv."""
    code = code.replace("http://127.0.0.1:8000", console.url).replace(".venv/bin/", BIN)
    return re.sub(r"\b8090\b", str(callback_port), code)


def run_bash(code: str, console: LiveConsole, **env: str) -> subprocess.CompletedProcess[str]:
    """`code` by bash -euo pipefail in the repository, on the console's database."""
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env={**os.environ, **console.env(), **env})
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def json_lines(output: str) -> list[Any]:
    """The JSON documents of `output`, one a line."""
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def python_process(code: str, token: str) -> subprocess.Popen[str]:
    """A documented Python snippet in its own interpreter; `token` given, the client on the path."""
    prelude = ("import os, socket\n"
               "token = os.environ['TOKEN']\n"
               "def connect(protocol, settings):\n"
               "    socket.create_connection((settings['host'], settings['port']), timeout=5).close()\n")
    return subprocess.Popen([sys.executable, "-c", prelude + code], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "TOKEN": token, "PYTHONPATH": str(ROOT / "clients" / "python")})


def end(process: subprocess.Popen[str]) -> str:
    """Stop a snippet's process; what it printed."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
    try:
        out, _ = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return out or ""


def stop_shell(shell: subprocess.Popen[str]) -> int:
    """SIGTERM to the command a documented shell block runs (its child, or the shell itself when bash
    exec'd the last command); the shell's exit code."""
    if subprocess.run(["pkill", "-TERM", "-P", str(shell.pid)], check=False).returncode != 0:
        shell.send_signal(signal.SIGTERM)
    return shell.wait(timeout=30)


# -- docs/connecting-a-service.md -----------------------------------------------------------------------
def test_the_curl_walkthrough(console: LiveConsole) -> None:
    version = console.change("mqtt", enabled=True, host="127.0.0.1", port=11883)
    port = free_port()
    result = run_bash(localized(doc_block("bash", "curl -sS -D -"), console, port), console)
    out = result.stdout
    registration, config, applied, failed, refused = json_lines(out)

    assert registration["name"] == "edge" and registration["protocols"] == ["mqtt", "rabbitmq"]
    assert registration["callback_url"] == f"http://127.0.0.1:{port}/console-callback"
    assert registration["protocol"] == "mqtt" and registration["service"]["name"] == "edge"
    assert registration["signing_secret"] == console.signing_secret("edge")

    state = console.service("edge")["rollout"]
    assert "HTTP/1.1 200 OK" in out and f'ETag: "{state["target"]["etag"]}"' in out
    assert (config["service"], config["version"], config["protocol"]) == ("edge", version, "mqtt")
    assert config["etag"] == state["target"]["etag"]
    assert {k: config["brokers"]["mqtt"][k] for k in ("host", "port", "nodes", "password", "tls", "tls_ca")} == {
        "host": "127.0.0.1", "port": 11883, "nodes": ["127.0.0.1:11883"], "password": None, "tls": False,
        "tls_ca": None}
    assert config["priorities"] == ["kafka", "mqtt", "nats", "pulsar", "rabbitmq"]
    assert re.search(r"^304$", out, re.M)
    assert 304 in [r.status for r in console.config_reads("edge")]

    assert applied["state"] == "applied" and applied["acknowledged"]["version"] == version
    assert applied["acknowledged"]["message"] == "connected to 127.0.0.1:11883"
    assert failed["state"] == "failed" and failed["acknowledged"]["current"] is True
    assert refused == {"error": "invalid", "errors": {"status": "Say applied or failed."},
                       "message": "The acknowledgement was not recorded."}
    assert state["acknowledged"]["message"] == "the broker refused the connection: Not authorized"
    tokens = {t["name"]: t for t in console.api("GET", "/api/v1/tokens")[1]["tokens"]}
    assert (tokens["edge-token"]["role"], tokens["edge-token"]["service"]) == ("service", "edge")


def test_the_documented_error_table_is_what_the_console_answers(console: LiveConsole) -> None:
    doc = DOC.read_text()
    edge, billing = console.token("edge-token", "edge"), console.token("billing-token", "billing")
    config = "/api/v1/services/edge/config"
    answers = {
        400: console.api("POST", "/api/v1/services", [1], token=edge),
        401: console.api("GET", config, token="not-a-token"),
        403: console.api("GET", config, token=billing),
        404: console.api("GET", config, token=edge),
        422: console.api("POST", "/api/v1/services", {"name": "edge", "protocols": ["smtp"]}, token=edge),
    }
    for status, (got, body) in answers.items():
        row = re.search(rf"^\| `{status}` \| `(\w+)` \|", doc, re.M)
        assert row and got == status and body["error"] == row.group(1), (status, got, body)
    assert f"(`{answers[401][1]['message']}`)" in doc and f"(`{answers[403][1]['message']}`)" in doc


def test_the_openssl_check_verifies_a_callback_the_console_sent(console: LiveConsole, tmp_path: Path) -> None:
    block = doc_block("bash", "# verify-signature")
    receiver = Receiver().start()
    try:
        token = console.token("edge-token", "edge")
        status, registration = console.api("POST", "/api/v1/services", {
            "name": "edge", "protocols": ["mqtt"], "callback_url": receiver.url("/console-callback")}, token=token)
        assert status == 201
        secret = registration["signing_secret"]
        receiver.secrets["edge"] = secret
        version = console.change("mqtt", enabled=True, host="127.0.0.1", port=11883)
        call = receiver.wait_for(1)[0]
    finally:
        receiver.stop()
    assert call["valid"] and call["json"] == {"service": "edge", "version": version,
                                              "etag": console.service("edge")["rollout"]["target"]["etag"]}
    (tmp_path / "body.json").write_bytes(call["body"])

    def check(secret_value: str, signature: str) -> str:
        result = subprocess.run(["bash", "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=10,
                                env={"PATH": "/usr/bin:/bin", "SECRET": secret_value, "SIGNATURE": signature})
        return result.stdout.strip().splitlines()[-1]

    assert check(secret, call["signature"]) == "signature ok"
    assert check("another-secret", call["signature"]) == "signature BAD"
    (tmp_path / "body.json").write_bytes(call["body"].replace(b'"edge"', b'"EDGE"'))
    assert check(secret, call["signature"]) == "signature BAD"


def test_the_python_walkthrough(console: LiveConsole, lab: dict) -> None:
    mqtt = lab["brokers"]["mqtt"]
    first = console.change("mqtt", enabled=True, host="127.0.0.1", port=mqtt["plain"])
    port = free_port()
    process = python_process(localized(doc_block("python", "client.watch(apply"), console, port),
                             console.token("edge-token", "edge"))
    try:
        ack = console.wait_ack("edge", first)
        assert (ack["status"], ack["message"]) == ("applied", f"connected to 127.0.0.1:{mqtt['plain']}")
        assert console.service("edge")["callback_url"] == f"http://127.0.0.1:{port}/console-callback"
        second = console.change("mqtt", port=mqtt["plain_auth"])          # called back, fetched, acknowledged
        assert console.wait_ack("edge", second)["message"] == f"connected to 127.0.0.1:{mqtt['plain_auth']}"
        assert console.service("edge")["rollout"]["delivery"]["state"] == "delivered"
        closed = free_port()
        third = console.change("mqtt", port=closed)
        ack = console.wait_ack("edge", third)
        assert ack["status"] == "failed" and "Connection refused" in ack["message"]
    finally:
        output = end(process)
    assert "Traceback" not in output, output


def test_the_example_service_commands(console: LiveConsole, lab: dict) -> None:
    mqtt = lab["brokers"]["mqtt"]
    version = console.change("mqtt", enabled=True, host="127.0.0.1", port=mqtt["plain"],
                             client_id=f"doc-example-{uuid.uuid4().hex[:8]}")
    port = free_port()
    start = doc_block("bash", "examples/extension_service/service.py")
    expected = [line[2:].replace("v12", f"v{version}").replace("11883", str(mqtt["plain"]))
                .replace("8090", str(port)) for line in start.splitlines() if line.startswith("# ")]
    service = subprocess.Popen(["bash", "-c", localized(start, console, port)], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "TOKEN": console.token("edge-token", "edge"),
                                    "PYTHONUNBUFFERED": "1"})
    try:
        lines = [service.stdout.readline().rstrip("\n") for _ in expected]
        assert lines == expected, service.stderr.read() if service.poll() is not None else lines
        status_block = doc_block("bash", "/status")
        status = json_lines(run_bash(localized(status_block, console, port), console).stdout)[0]
        documented = json.loads(re.search(r"# (\{.*), …\}", status_block).group(1) + "}")
        documented.update(version=version, broker=f"127.0.0.1:{mqtt['plain']}")
        assert {k: status[k] for k in documented} == documented
        assert console.wait_ack("edge", version)["status"] == "applied"
    finally:
        assert stop_shell(service) == 0
    assert service.stdout.read().splitlines()[-2:] == ["stopping on SIGTERM", "stopped"]


def test_the_example_readme_commands(console: LiveConsole, lab: dict) -> None:
    """examples/extension_service/README.md: the token made by the CLI, then the service started with it."""
    mqtt = lab["brokers"]["mqtt"]
    version = console.change("mqtt", enabled=True, host="127.0.0.1", port=mqtt["plain"],
                             client_id=f"readme-example-{uuid.uuid4().hex[:8]}")
    (block,) = [b for b in code_blocks(EXAMPLE_README.read_text(), "bash") if "service.py" in b]
    port = free_port()
    service = subprocess.Popen(["bash", "-euo", "pipefail", "-c", localized(block, console, port)], cwd=ROOT,
                               text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, **console.env(), "PYTHONUNBUFFERED": "1"})
    try:
        lines = [service.stdout.readline().rstrip("\n") for _ in range(3)]
        assert lines == [f"listening 127.0.0.1:{port}",
                         f"registered edge mqtt,rabbitmq callback=http://127.0.0.1:{port}/console-callback",
                         f"applied v{version} mqtt 127.0.0.1:{mqtt['plain']}"], lines
        assert console.wait_ack("edge", version)["status"] == "applied"
        tokens = {t["name"]: t for t in console.api("GET", "/api/v1/tokens")[1]["tokens"]}
        assert tokens["edge-token"]["service"] == "edge"
    finally:
        assert stop_shell(service) == 0


# -- README.md ------------------------------------------------------------------------------------------
def test_the_readme_curl_lines(console: LiveConsole) -> None:
    version = console.change("mqtt", enabled=True, host="127.0.0.1", port=11883)
    (block,) = code_blocks(readme_section(), "bash")
    assert len(block.strip().splitlines()) == 6
    result = run_bash(localized(block, console, free_port()), console)
    registration, config, ack = json_lines(result.stdout)
    assert registration["name"] == "edge" and registration["protocols"] == ["mqtt"]
    assert "signing_secret" not in registration and registration["callback_url"] is None
    assert config["version"] == version and config["protocol"] == "mqtt" and "ETag: " in result.stdout
    assert (ack["acknowledged"]["version"], ack["acknowledged"]["status"]) == (12, "applied")
    assert console.service("edge")["rollout"]["acknowledged"]["message"] == "connected"


def test_the_readme_python_lines(console: LiveConsole) -> None:
    (block,) = code_blocks(readme_section(), "python")
    assert len(block.strip().splitlines()) == 6
    first = console.change("rabbitmq", enabled=True, host="127.0.0.1", port=5672)
    process = python_process(localized(block, console, free_port()), console.token("edge-token", "edge"))
    try:
        assert console.wait_ack("edge", first)["message"] == "using rabbitmq"
        second = console.change("mqtt", enabled=True, host="127.0.0.1", port=1883)   # mqtt comes first
        assert console.wait_ack("edge", second)["message"] == "using mqtt"
        assert console.service("edge")["rollout"]["delivery"]["state"] == "delivered"
    finally:
        output = end(process)
    assert "Traceback" not in output, output


def test_curl_and_openssl_are_installed_by_the_system_deps_script() -> None:
    script = (ROOT / "scripts" / "system-deps.sh").read_text()
    for tool in ("curl", "openssl"):
        assert f"command -v {tool} >/dev/null || need+=({tool})" in script

