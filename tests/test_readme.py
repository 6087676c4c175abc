"""Every command the README shows, run the way the README shows it: `make run` serving, `make brokers`
then the badges up, and every line of the "Command line" block, each as its own `.venv/bin/flask --app
app …` process on a temporary instance. The README is parsed: a command added to it without a test here
fails `test_every_readme_command_has_a_test`, and `test_every_cli_line_was_run` checks that the tests
really ran each subcommand with each option the README names."""
from __future__ import annotations

import contextlib
import http.cookiejar
import json
import os
import re
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from console.brokers import PROTOCOLS
from console.messaging.schema import PROTOCOL_LABELS
from tests.live_gunicorn import stop_group

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FLASK = ".venv/bin/flask --app app"
RUNS: list[list[str]] = []          # every `flask` argv the tests ran (checked by the last test)
SERVE_DEADLINE = 90.0


def readme_commands(text: str | None = None) -> list[str]:
    """Every command the README shows: each line of its bash blocks (comments cut) and each inline
    `make …` (a `&&` chain split into its commands)."""
    text = README.read_text() if text is None else text
    found: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line:
                found.append(line)
    for span in re.findall(r"`((?:make|curl|\.venv/)[^`]*)`", text):
        found += [part.strip() for part in span.split("&&")]
    return list(dict.fromkeys(found))


def cli_lines() -> list[str]:
    return [c for c in readme_commands() if c.startswith(FLASK + " ")]


# README command → the test that runs it (or, for two of them, why they cannot run inside the suite
# and what runs instead).
COVERED: dict[str, str] = {
    "make run": "test_make_run_serves_and_makes_a_first_admin",
    "make brokers": "test_make_brokers_saves_the_lab_and_is_idempotent",
    "make test": "test_make_test_is_what_ci_runs",
    "make bench": "test_make_bench_runs_every_benchmark_by_hand",
    "make brokers-stop": "test_make_brokers_stop_runs_without_touching_the_shared_lab",
    f"{FLASK} users create NAME --role admin|viewer [--password-stdin]": "test_cli_users",
    f"{FLASK} users set-password NAME": "test_cli_users",
    f"{FLASK} tokens create NAME --role admin|viewer|service [--service SVC]": "test_cli_tokens",
    f"{FLASK} tokens list | tokens revoke NAME": "test_cli_tokens",
    f"{FLASK} brokers list [--json]": "test_cli_brokers_list",
    f"{FLASK} brokers check [PROTOCOL…] [--json] [--timeout S]": "test_cli_brokers_check",
    f"{FLASK} brokers diagnose PROTOCOL [--json] [--timeout S]": "test_cli_brokers_diagnose",
    f"{FLASK} brokers use-lab": "test_make_brokers_saves_the_lab_and_is_idempotent",
    f"{FLASK} config export [-o FILE]": "test_cli_config_export_and_import",
    f"{FLASK} config import FILE [--dry-run] [--confirm] [--replace]": "test_cli_config_export_and_import",
    f"{FLASK} db upgrade | db downgrade": "test_cli_db_upgrade_and_downgrade",
    f"{FLASK} backup FILE": "test_cli_backup_restores",
}
# The "Connecting a service" lines run against a live console, with the docs they come from.
_DOCS = "tests/clients/test_connecting_docs.py::test_the_readme_curl_lines"
for _line in ('TOKEN=$(.venv/bin/flask --app app tokens create edge-token --role service --service edge)',
              'AUTH="Authorization: Bearer $TOKEN"; JSON=\'Content-Type: application/json\'; '
              'API=http://127.0.0.1:8000/api/v1',
              'curl -sS -X POST "$API/services" -H "$AUTH" -H "$JSON" -d \'{"name": "edge", "protocols": ["mqtt"]}\'',
              'curl -sS -D - "$API/services/edge/config" -H "$AUTH"',
              'curl -sS -X POST "$API/services/edge/ack" -H "$AUTH" -H "$JSON" \\',
              '-d \'{"version": 12, "status": "applied", "message": "connected"}\''):
    COVERED[_line] = _DOCS
# "Signing in with LDAP or OpenID Connect": the identity lab's demo, signed in with what it prints
COVERED[".venv/bin/python scripts/identitylab.py demo DIR"] = \
    "tests/auth/test_identitylab_demo.py::test_the_demo_prints_a_configuration_that_works"
# the watch loop of "Running a service that cannot be changed" runs against a live console
for _line in ("TAG='\"none\"'",
              "while STATUS=$(curl -sS -o new.json -D headers -w '%{http_code}' -H \"$AUTH\" "
              "-H \"If-None-Match: $TAG\" \"$API/services/edge/config?wait=300\"); do",
              "if [ \"$STATUS\" = 200 ]; then TAG=$(sed -n 's/^[Ee][Tt]ag: //p' headers | tr -d '\\r'); mv new.json "
              "config.json; echo \"new settings $TAG\"; fi; done"):
    COVERED[_line] = "tests/delivery/test_watch_live.py::test_the_readme_watch_loop"
# the console-agent lines of "Running a service that cannot be changed", each run as shown, in order
AGENT_LINES = ("pip install clients/agent", 'echo "$TOKEN" > edge.token', 'C="--console ', "console-agent ",
               "printf 'bootstrap.servers=")


def agent_lines() -> list[str]:
    """The README's console-agent lines (tests/clients/agent/test_readme_agent.py runs each one)."""
    return [c for c in readme_commands() if c.startswith(AGENT_LINES)]


for _line in agent_lines():
    COVERED[_line] = "tests/clients/agent/test_readme_agent.py::test_every_agent_line_of_the_readme_runs"
WAVE_LINES = ('curl -sS -X PATCH "$API/brokers/mqtt" -H "Authorization: Bearer $ADMIN_TOKEN"',
              'curl -sS "$API/rollouts/current" -H "Authorization: Bearer $ADMIN_TOKEN"',
              'curl -sS -X POST "$API/rollouts/1/rollback" -H "Authorization: Bearer $ADMIN_TOKEN"')


def wave_lines() -> list[str]:
    """The README's waves example (tests/clients/agent/test_waves_agent.py runs each one)."""
    return [c for c in readme_commands() if c.startswith(WAVE_LINES)]


for _line in wave_lines():
    COVERED[_line] = "tests/clients/agent/test_waves_agent.py::test_a_bad_password_on_the_canary_halts_the_wave"


def section_commands(title: str) -> list[str]:
    """The commands of one README section (`## title` up to the next `## `)."""
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return readme_commands(text[start:end if end > 0 else None])


for _line in section_commands("Roll-outs in waves"):
    COVERED[_line] = "tests/delivery/test_waves_readme.py::test_the_readme_lines_of_roll_outs_in_waves"
# the If-Match lines of "Two people changing one protocol" run against a live console
for _line in ("TAG=$(curl -sS -D - -o /dev/null \"$API/brokers/mqtt\" -H \"$AUTH\" | sed -n 's/^[Ee][Tt]ag: //p' | "
              "tr -d '\\r')",
              'curl -sS -X PATCH "$API/brokers/mqtt" -H "$AUTH" -H "If-Match: $TAG" -H \'Content-Type: '
              'application/json\' -d \'{"port": 1884}\''):
    COVERED[_line] = "tests/settings/test_conflicts.py::test_the_readme_if_match_lines"
# the Deployment lines: both run, as the README shows them, by the scale-out test (two masters, PostgreSQL)
for _line in (f"{FLASK} db upgrade", ".venv/bin/gunicorn --config gunicorn.conf.py app:app"):
    COVERED[_line] = "tests/test_scale_out.py::test_two_instances_on_one_database"
# the alert rules: promtool, as the README shows it
COVERED["promtool check rules deploy/prometheus/alerts.yml"] = \
    "tests/deploy/test_alerts.py::test_promtool_checks_the_rules"
COVERED["promtool test rules tests/deploy/alerts.test.yml"] = \
    "tests/deploy/test_alerts.py::test_promtool_unit_tests_pass"
# the development server runs the background work: started for real, with and without the reloader
COVERED[f"{FLASK} run [--debug]"] = "tests/test_background.py::test_flask_run_runs_the_background_checks"


def test_every_readme_command_has_a_test() -> None:
    shown = readme_commands()
    missing = [c for c in shown if c not in COVERED]
    assert not missing, f"README commands without a test in tests/test_readme.py: {missing}"
    gone = [c for c in COVERED if c not in shown]
    assert not gone, f"tests/test_readme.py covers commands the README no longer shows: {gone}"
    for name in COVERED.values():
        if "::" in name:
            path, _, function = name.partition("::")
            module = __import__(path[:-3].replace("/", "."), fromlist=[function])
            assert hasattr(module, function), name
        else:
            assert name in globals(), name


def test_readme_parser_sees_new_commands() -> None:
    text = "x\n```bash\nmake demo   # new\n.venv/bin/flask --app app brokers frobnicate\n```\n`make a && make b`"
    assert readme_commands(text) == ["make demo", ".venv/bin/flask --app app brokers frobnicate",
                                      "make a", "make b"]


def test_readme_points_at_the_interface_users_have() -> None:
    text = README.read_text()
    assert "CONTRACT.md" not in text
    assert "docs/interface.md" in text and (ROOT / "docs" / "interface.md").is_file()
    for link in re.findall(r"\]\(((?!https?:)[^)#]+)", text):
        assert (ROOT / link).exists(), f"README links to {link}, which is not in the repository"


def test_interface_lists_every_cause_code() -> None:
    from console.brokers.base import CAUSES

    text = (ROOT / "docs" / "interface.md").read_text()
    listed = re.findall(r"^\| `([a-z_]+)` \|", text, re.M)
    assert sorted(listed) == sorted(CAUSES)


# ---------------------------------------------------------------------------------------- helpers

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(instance: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CONSOLE_", "SP_", "BROKERLAB_", "MAKEFLAGS", "MFLAGS"))}
    return {**env, "CONSOLE_INSTANCE_PATH": str(instance), **extra}


def flask(env: dict[str, str], *args: str, stdin: str | None = None,
          timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`.venv/bin/flask --app app ARGS…` as the README writes it, in the repository."""
    RUNS.append(list(args))
    return subprocess.run([".venv/bin/flask", "--app", "app", *args], cwd=ROOT, env=env,
                          input=stdin, capture_output=True, text=True, timeout=timeout,
                          start_new_session=True)   # no terminal: prompts read standard input


def make(env: dict[str, str], *targets: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", *targets], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def versions(instance: Path) -> int:
    with sqlite3.connect(instance / "console.db") as conn:
        return conn.execute("SELECT count(*) FROM config_versions").fetchone()[0]


class Served:
    """`make run` in its own process group, its output collected; stopped by its group id."""

    def __init__(self, env: dict[str, str]) -> None:
        self.base = f"http://{env['CONSOLE_BIND']}"
        self.lines: list[str] = []
        self.proc = subprocess.Popen(["make", "run"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with self.opener.open(self.base + path, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def post(self, path: str, data: dict[str, str]) -> tuple[int, str]:
        body = urllib.parse.urlencode(data).encode()
        try:
            with self.opener.open(self.base + path, data=body, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def wait_until_healthy(self) -> None:
        deadline = time.monotonic() + SERVE_DEADLINE
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._reader.join(5)
                raise AssertionError(f"make run exited with {self.proc.returncode}:\n{self.output}")
            try:
                if self.get("/healthz") == (200, '{"status":"ok"}\n'):
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"/healthz did not answer within {SERVE_DEADLINE:g} s:\n{self.output}")

    def login(self, name: str, password: str) -> None:
        _, page = self.get("/login")
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
        token = token or re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
        assert token, page[:500]
        status, page = self.post("/login", {"csrf_token": token.group(1), "username": name,
                                            "password": password})
        assert status == 200 and "Log out" in page, page[:500]

    def stop(self) -> None:
        stop_group(self.proc)
        self._reader.join(5)


@contextlib.contextmanager
def serve(env: dict[str, str]) -> Iterator[Served]:
    server = Served(env)
    try:
        server.wait_until_healthy()
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------- make

def test_make_test_is_what_ci_runs() -> None:
    """`make test` runs this very suite, so it cannot run inside it: CI runs it (.ci/run), and here its
    recipe is checked to prepare everything and then run the whole suite."""
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    plan = subprocess.run(["make", "--no-print-directory", "-n", "test"], cwd=ROOT, capture_output=True, text=True,
                          env=_env(ROOT / "instance"), timeout=60)
    assert plan.returncode == 0, plan.stderr
    steps = plan.stdout
    assert "scripts/system-deps.sh" in steps and "brokerlab.py start" in steps
    assert "identitylab.py install" in steps
    assert "postgres-test-db.sh" in steps and steps.rstrip().endswith("pytest -q tests")


def test_make_bench_runs_every_benchmark_by_hand() -> None:
    """`make bench` is run by hand, never in the suite (it takes minutes and prints figures, it asserts
    nothing): its recipe starts the lab and runs every benchmark the runner discovers."""
    plan = subprocess.run(["make", "--no-print-directory", "-n", "bench"], cwd=ROOT, capture_output=True, text=True,
                          env=_env(ROOT / "instance"), timeout=60)
    assert plan.returncode == 0, plan.stderr
    assert "brokerlab.py start" in plan.stdout and "-m bench" in plan.stdout
    listed = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m", "bench", "--list"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    for name in ("checks", "impact", "delivery"):
        assert name in listed.stdout


def test_install_targets_do_nothing_when_done(tmp_path: Path) -> None:
    """The targets that install packages are idempotent: when everything is there they install
    nothing (the time they then take is measured by bench/readme.py)."""
    env = _env(tmp_path)
    uptodate = make(env, "-q", ".venv/.installed", ".venv/.installed-dev")
    assert uptodate.returncode == 0, "the venv stamps are out of date: make install would reinstall"
    again = make(env, "install", "install-dev", "system-deps")
    assert again.returncode == 0, again.stderr
    assert "pip install" not in again.stdout and "Installing Debian packages" not in again.stdout


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, lab) -> dict:
    """`make brokers` twice on a fresh instance, as a new user would before `make run`."""
    instance = tmp_path_factory.mktemp("readme-instance")
    env = _env(instance)
    first = make(env, "brokers")
    assert first.returncode == 0, first.stdout + first.stderr
    after_first = versions(instance)
    second = make(env, "brokers")
    assert second.returncode == 0, second.stdout + second.stderr
    RUNS.append(["brokers", "use-lab"])
    return {"instance": instance, "env": env, "first": first.stdout, "second": second.stdout,
            "versions": (after_first, versions(instance))}


def test_make_brokers_saves_the_lab_and_is_idempotent(demo: dict, lab: dict) -> None:
    first, second = demo["first"], demo["second"]
    for protocol in PROTOCOLS:
        line = next(row for row in first.splitlines() if row.startswith(PROTOCOL_LABELS[protocol] + " "))
        assert "enabled" in line and "unchanged" not in line, first
        again = next(row for row in second.splitlines() if row.startswith(PROTOCOL_LABELS[protocol] + " "))
        assert again.split() == [PROTOCOL_LABELS[protocol], "unchanged"], second
    assert "RabbitMQ  enabled, host, password, port, username, vhost" in first
    assert lab["brokers"]["rabbitmq"]["password"] not in first + second
    before, after = demo["versions"]
    assert before == 1 + len(PROTOCOLS), "a baseline, then one version per protocol"
    assert after == before, "an unchanged use-lab must not record a version"


def test_make_run_serves_and_makes_a_first_admin(demo: dict) -> None:
    """`make brokers && make run`: the page's badges and /readyz show the five lab brokers up."""
    env = {**demo["env"], "CONSOLE_BIND": f"127.0.0.1:{_free_port()}", "CONSOLE_WORKERS": "1"}
    with serve(env) as server:
        created = re.search(r"Created admin 'admin' with password: (\S+)", server.output)
        assert created, server.output
        deadline = time.monotonic() + SERVE_DEADLINE
        while time.monotonic() < deadline:
            code, body = server.get("/readyz")
            ready = json.loads(body)
            if code == 200 and ready["status"] == "ok":
                break
            time.sleep(0.3)
        assert code == 200 and ready["status"] == "ok", ready
        assert {p: b["status"] for p, b in ready["brokers"].items()} == dict.fromkeys(PROTOCOLS, "up")
        assert "Log in" in server.get("/settings/messaging")[1]  # a stranger is sent to log in
        server.login("admin", created.group(1))
        code, page = server.get("/settings/messaging")
        overview = page[page.index('id="overview"'):page.index("</section>", page.index('id="overview"'))]
        assert code == 200 and overview.count('<span class="badge up">● up</span>') == 5
        assert page.count('<span class="badge up" title="last check passed">● up</span>') == 1
        assert "re-checking" not in page and "● down" not in page
        code, metrics = server.get("/metrics")
        assert 'messaging_broker_up{protocol="kafka"} 1.0' in metrics


def test_make_run_takes_the_admin_password_from_the_environment(tmp_path: Path) -> None:
    env = _env(tmp_path / "instance", CONSOLE_BIND=f"127.0.0.1:{_free_port()}",
               CONSOLE_WORKERS="1", CONSOLE_CHECK_SCHEDULER="false",
               CONSOLE_ADMIN_PASSWORD="from-the-environment-1")
    with serve(env) as server:
        assert "with the password from CONSOLE_ADMIN_PASSWORD" in server.output
        assert "from-the-environment-1" not in server.output
        server.login("admin", "from-the-environment-1")
        assert (tmp_path / "instance" / "console.db").is_file()


def test_make_brokers_stop_runs_without_touching_the_shared_lab(tmp_path: Path, lab: dict) -> None:
    """`make brokers-stop` is run against an empty lab directory (BROKERLAB_DIR): the running lab is
    shared by every checkout on this machine and must keep running."""
    empty = tmp_path / "no-lab"
    empty.mkdir()
    stopped = make({**_env(tmp_path), "BROKERLAB_DIR": str(empty)}, "brokers-stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped nothing (no lab process running)" in stopped.stdout
    status = make(_env(tmp_path), "brokers-status")
    assert status.returncode == 0, status.stdout


# ---------------------------------------------------------------------------------- command line

def test_cli_users(tmp_path: Path, demo: dict) -> None:
    env = _env(tmp_path / "users")
    assert flask(env, "db", "upgrade").returncode == 0
    made = flask(env, "users", "create", "ops", "--role", "admin", "--password-stdin",
                 stdin="long-enough-pw\n")
    assert made.returncode == 0 and "Created admin ops." in made.stdout, made.stderr
    viewer = flask(env, "users", "create", "watcher", "--role", "viewer",
                   stdin="watcher-password\nwatcher-password\n")
    assert viewer.returncode == 0 and "Created viewer watcher." in viewer.stdout, viewer.stderr
    changed = flask(env, "users", "set-password", "ops", stdin="another-long-pw\nanother-long-pw\n")
    assert changed.returncode == 0 and "Password of ops changed." in changed.stdout, changed.stderr
    listed = flask(env, "users", "list")
    assert listed.stdout.splitlines() == ["ops\tadmin", "watcher\tviewer"]
    unknown = flask(env, "users", "set-password", "nobody", stdin="x-long-enough\nx-long-enough\n")
    assert unknown.returncode != 0 and "No user named nobody" in unknown.stderr
    serving = {**env, "CONSOLE_BIND": f"127.0.0.1:{_free_port()}", "CONSOLE_WORKERS": "1",
               "CONSOLE_CHECK_SCHEDULER": "false"}
    with serve(serving) as server:
        assert "Users exist; no admin created." in server.output
        server.login("ops", "another-long-pw")


def test_cli_tokens(demo: dict) -> None:
    env = demo["env"]
    token = flask(env, "tokens", "create", "readme-admin", "--role", "admin")
    assert token.returncode == 0 and token.stdout.startswith("mc_"), token.stderr
    viewer = flask(env, "tokens", "create", "readme-viewer", "--role", "viewer")
    assert viewer.returncode == 0
    bound = flask(env, "tokens", "create", "readme-service", "--role", "service", "--service", "edge")
    assert bound.returncode == 0 and bound.stdout.startswith("mc_")
    listing = flask(env, "tokens", "list")
    assert "readme-admin\tadmin" in listing.stdout and "readme-viewer\tviewer" in listing.stdout
    assert "readme-service\tservice:edge" in listing.stdout
    assert token.stdout.strip() not in listing.stdout
    for name in ("readme-admin", "readme-viewer", "readme-service"):
        revoked = flask(env, "tokens", "revoke", name)
        assert revoked.returncode == 0 and f"Revoked {name}." in revoked.stdout
    assert "readme-" not in flask(env, "tokens", "list").stdout


def test_cli_brokers_list(demo: dict, lab: dict) -> None:
    env = demo["env"]
    text = flask(env, "brokers", "list")
    assert text.returncode == 0 and "RabbitMQ (enabled)" in text.stdout
    assert re.search(r"port\s+17672\s+\[saved\]", text.stdout)
    body = json.loads(flask(env, "brokers", "list", "--json").stdout)
    password = body["brokers"]["rabbitmq"]["settings"]["password"]
    assert password["source"] == "saved" and password["value"] == {"set": True}
    assert lab["brokers"]["rabbitmq"]["password"] not in text.stdout


def test_cli_brokers_check(demo: dict) -> None:
    env = demo["env"]
    every = flask(env, "brokers", "check")
    assert every.returncode == 0, every.stdout + every.stderr
    for protocol in PROTOCOLS:
        assert re.search(rf"^{PROTOCOL_LABELS[protocol]}\s+UP\s", every.stdout, re.M), every.stdout
    assert "TLS off" in every.stdout and "tls=False" not in every.stdout and "=" not in every.stdout
    one = flask(env, "brokers", "check", "mqtt", "nats", "--json", "--timeout", "3")
    body = json.loads(one.stdout)
    assert one.returncode == 0 and body["ok"] is True and list(body["brokers"]) == ["mqtt", "nats"]
    assert body["timeout"] == 3.0 and body["brokers"]["mqtt"]["status"] == "up"
    down = flask({**env, "SP_NATS_PORT": "17999"}, "brokers", "check", "nats", "--timeout", "2")
    assert down.returncode == 1 and "connection_refused" in down.stdout


def test_cli_brokers_diagnose(demo: dict) -> None:
    env = demo["env"]
    text = flask(env, "brokers", "diagnose", "rabbitmq")
    assert text.returncode == 0 and "Healthy." in text.stdout, text.stdout + text.stderr
    body = json.loads(flask(env, "brokers", "diagnose", "mqtt", "--json", "--timeout", "5").stdout)
    assert body["ok"] is True and [s["name"] for s in body["steps"]] == [
        "dns", "tcp", "tls", "handshake", "auth", "operation"]
    failed = flask({**env, "SP_KAFKA_PORT": "17999"}, "brokers", "diagnose", "kafka", "--timeout", "3")
    assert failed.returncode == 1 and "Cause: connection_refused" in failed.stdout


def test_cli_config_export_and_import(demo: dict, tmp_path: Path) -> None:
    env = demo["env"]
    exported = flask(env, "config", "export")
    assert exported.returncode == 0 and "labpass" not in exported.stdout
    target = tmp_path / "console.yaml"
    written = flask(env, "config", "export", "-o", str(target))
    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[^'\s]*")
    assert written.returncode == 0 and f"Exported to {target}." in written.stderr
    assert stamp.sub("", target.read_text()) == stamp.sub("", exported.stdout)
    same = flask(env, "config", "import", str(target))
    assert same.returncode == 0 and "nothing to do" in same.stdout
    data = yaml.safe_load(target.read_text())
    data["brokers"]["mqtt"]["keepalive"] = 45
    target.write_text(yaml.safe_dump(data))
    before = versions(demo["instance"])
    dry = flask(env, "config", "import", str(target), "--dry-run")
    assert dry.returncode == 0 and "Dry run" in dry.stdout and "keepalive" in dry.stdout
    assert versions(demo["instance"]) == before
    applied = flask(env, "config", "import", str(target), "--confirm")
    assert applied.returncode == 0 and "Imported (version" in applied.stdout, applied.stdout
    assert versions(demo["instance"]) == before + 1
    data["brokers"]["mqtt"]["keepalive"] = "often"
    target.write_text(yaml.safe_dump(data))
    refused = flask(env, "config", "import", str(target))
    assert refused.returncode == 1 and "Nothing was imported" in refused.stderr
    partial = tmp_path / "partial.yaml"
    partial.write_text("brokers: {mqtt: {keepalive: 45}}\n")
    merge = flask(env, "config", "import", str(partial), "--dry-run")
    assert merge.returncode == 0 and "changes only what the file names" in merge.stdout, merge.stdout
    replace = flask(env, "config", "import", str(partial), "--dry-run", "--replace")
    assert replace.returncode == 0 and "replaces everything" in replace.stdout, replace.stdout
    assert versions(demo["instance"]) == before + 1


def test_cli_db_upgrade_and_downgrade(tmp_path: Path) -> None:
    env = _env(tmp_path / "db")
    assert flask(env, "db", "upgrade").returncode == 0
    down = flask(env, "db", "downgrade")
    assert down.returncode == 0, down.stderr
    with sqlite3.connect(tmp_path / "db" / "console.db") as conn:
        after_down = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    up = flask(env, "db", "upgrade")
    assert up.returncode == 0, up.stderr
    with sqlite3.connect(tmp_path / "db" / "console.db") as conn:
        head = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    assert after_down != head


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_a_command_leaves_the_whole_database_in_its_file(tmp_path: Path) -> None:
    """After `flask db upgrade` exits, console.db alone (copied without its -wal) holds the tables."""
    env = _env(tmp_path / "db")
    assert flask(env, "db", "upgrade").returncode == 0
    assert not (tmp_path / "db" / "console.db-wal").exists()
    copy = tmp_path / "copied.db"
    copy.write_bytes((tmp_path / "db" / "console.db").read_bytes())
    assert {"users", "api_tokens", "alembic_version"} <= _tables(copy)


def test_cli_backup_restores(tmp_path: Path) -> None:
    env = _env(tmp_path / "live")
    assert flask(env, "db", "upgrade").returncode == 0
    made = flask(env, "users", "create", "ops", "--role", "admin", "--password-stdin",
                 stdin="long-enough-pw\n")
    assert made.returncode == 0, made.stderr
    # a writer holds the database open (as a serving console does) while the backup is taken
    with sqlite3.connect(tmp_path / "live" / "console.db") as writer:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("UPDATE users SET role='viewer' WHERE username='ops'")
        writer.commit()
        assert (tmp_path / "live" / "console.db-wal").exists()
        saved = flask(env, "backup", str(tmp_path / "copy.db"))
        assert saved.returncode == 0 and "Backed up" in saved.stdout, saved.stderr
    again = flask(env, "backup", str(tmp_path / "copy.db"))
    assert again.returncode != 0 and "exists already" in again.stderr
    restored = tmp_path / "restored"
    restored.mkdir()
    (restored / "console.db").write_bytes((tmp_path / "copy.db").read_bytes())
    for key in ("secret.key", "encryption.key"):
        if (tmp_path / "live" / key).exists():
            (restored / key).write_bytes((tmp_path / "live" / key).read_bytes())
    listed = flask(_env(restored), "users", "list")
    assert listed.returncode == 0 and listed.stdout.splitlines() == ["ops\tviewer"], listed.stderr


def test_backup_on_postgresql_names_pg_dump(tmp_path: Path) -> None:
    from tests.db_fixtures import PG_URL

    pg = flask(_env(tmp_path / "pg", CONSOLE_DATABASE_URL=PG_URL), "backup", str(tmp_path / "x"))
    assert pg.returncode != 0 and "pg_dump" in pg.stderr and "pg_restore" in pg.stderr, pg.stderr
    assert not (tmp_path / "x").exists()


def _alternatives(line: str) -> list[list[str]]:
    """A README CLI line as the token lists of its alternatives (`a | b`)."""
    rest = line[len(FLASK) + 1:]
    out = []
    for part in rest.split(" | "):
        out.append([t.strip("[]") for t in part.split()])
    return out


def test_every_cli_line_was_run() -> None:
    """Each subcommand of the README's Command line block was run, with each option and each choice
    (`admin|viewer`) it shows (placeholders in capitals stand for any value)."""
    if not any(run[:1] == ["tokens"] for run in RUNS):
        pytest.skip("run the whole module: this checks what the tests above ran")
    for line in cli_lines():
        if "::" in COVERED.get(line, ""):       # run by the test named there, not by this module
            continue
        for tokens in _alternatives(line):
            words = []
            for t in tokens:
                if t.startswith("-") or t.isupper() or not t.islower():
                    break
                words.append(t)
            runs = [r for r in RUNS if r[:len(words)] == words]
            assert runs, f"{line}: `{' '.join(words)}` was never run"
            for i, t in enumerate(tokens):
                if t.startswith("-"):
                    assert any(t in r for r in runs), f"{line}: {t} was never used"
                if "|" in t and i > 0 and tokens[i - 1].startswith("-"):
                    for choice in t.split("|"):
                        assert any(tokens[i - 1] in r and choice in r for r in runs), (line, choice)
