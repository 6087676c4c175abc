"""Real consoles under gunicorn for the tests that need real processes (several workers, several
masters on one database, web threads that can run out): `Gunicorn` starts one master with its
workers on a free loopback port and knows when every worker answers; `Browser` is a client with
cookies and the CSRF token, as a user's browser; `pg_database` makes a fresh PostgreSQL database."""
from __future__ import annotations

import http.client
import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
ACCESS_FORMAT = "%(p)s %(m)s %(U)s %(s)s"     # pid first: which worker answered


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_database(suffix: str) -> str:
    """A fresh database named after the test database (`<its name>_<suffix>`), so that runs on
    other test databases of the same server never drop it; skipped without PostgreSQL (not in CI)."""
    base = os.environ.get("CONSOLE_TEST_PG_URL",
                          "postgresql+psycopg://postgres@127.0.0.1:5432/console_test")
    name = f"{base.rsplit('/', 1)[1].split('?')[0]}_{suffix}"
    admin = sa.create_engine(base.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is needed for this test in CI: {exc}")
        pytest.skip(f"no PostgreSQL: {exc}")
    finally:
        admin.dispose()
    return base.rsplit("/", 1)[0] + f"/{name}"


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to a process started in a session of its own and to all its children (a gunicorn master
    and its workers); SIGKILL to what has not ended 30 s later."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def flask(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    """One `flask --app app …` command on `env`'s database; its output."""
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "app", *args], cwd=ROOT, env=env,
                          input=stdin, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


def prepare(env: dict[str, str], admin_password: str = "admin-password-1") -> str:
    """Migrate `env`'s database, create the admin user; an admin API token."""
    flask(env, "db", "upgrade")
    flask(env, "users", "create", "admin", "--role", "admin", "--password-stdin",
          stdin=admin_password + "\n")
    return flask(env, "tokens", "create", "ops", "--role", "admin")


class Gunicorn:
    """One gunicorn master (gunicorn.conf.py) with `workers` workers of `threads` threads each."""

    def __init__(self, env: dict[str, str], logs: Path, *, workers: int = 1, threads: int = 4,
                 name: str = "console") -> None:
        self.port = free_port()
        self.workers = workers
        self.env = {**env, "CONSOLE_BIND": f"127.0.0.1:{self.port}", "CONSOLE_WORKERS": str(workers),
                    "CONSOLE_THREADS": str(threads)}
        logs.mkdir(parents=True, exist_ok=True)
        self.access_log = logs / f"{name}-access.log"
        self.error_log = logs / f"{name}-error.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Gunicorn:
        with open(self.access_log, "wb") as out, open(self.error_log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py",
                 "--access-logformat", ACCESS_FORMAT, "app:app"],
                cwd=ROOT, env=self.env, stdout=out, stderr=err, start_new_session=True)
        return self

    def log(self) -> str:
        return self.error_log.read_text(errors="replace")

    def answering_workers(self) -> set[str]:
        """Pids of the workers that have answered a request so far (from the access log)."""
        text = self.access_log.read_text(errors="replace") if self.access_log.exists() else ""
        return {line.split()[0].strip("<>") for line in text.splitlines() if line.startswith("<")}

    def wait_all_workers(self, seconds: float = 90) -> None:
        """Until every worker has answered /healthz: each has booted and started its background
        work. Several clients at once, each on a new connection, so that every worker gets some."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log()[-3000:]
            if len(self.answering_workers()) >= self.workers:
                return
            threads = [threading.Thread(target=self._probe) for _ in range(2 * self.workers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            time.sleep(0.2)
        raise AssertionError(f"not every worker answered within {seconds} s: "
                             f"{self.answering_workers()}\n{self.log()[-3000:]}")

    def _probe(self) -> None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            conn.close()
        except OSError:
            time.sleep(0.1)

    def stop(self) -> str:
        """SIGTERM to the master and its workers; the error log."""
        if self.proc is not None:
            stop_group(self.proc)
        return self.log()

    def __enter__(self) -> Gunicorn:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def get(url: str, path: str, timeout: float = 10, headers: dict[str, str] | None = None
        ) -> tuple[int, dict[str, str], str]:
    """One request on a new connection: (status, headers, body)."""
    request = urllib.request.Request(url + path, headers=headers or {})
    return _open(urllib.request.urlopen, request, timeout)


def api(url: str, method: str, path: str, token: str, body: Any = None, timeout: float = 30
        ) -> tuple[int, dict[str, str], Any]:
    """One API call with a bearer token: (status, headers, JSON or None)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    status, headers, text = _open(urllib.request.urlopen, request, timeout)
    try:
        return status, headers, json.loads(text)
    except ValueError:
        return status, headers, None


def _open(opener: Any, request: urllib.request.Request, timeout: float
          ) -> tuple[int, dict[str, str], str]:
    try:
        with opener(request, timeout=timeout) as answer:
            return answer.status, dict(answer.headers), answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


class Browser:
    """A user's browser on one console: cookies, and the CSRF token of the last page it loaded."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.jar = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.csrf = ""

    def elsewhere(self, url: str) -> Browser:
        """The same browser (its cookies, its session) on another console."""
        other = Browser(url)
        other.jar = self.jar
        other._opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        other.csrf = self.csrf
        return other

    def _remember_token(self, text: str) -> None:
        found = (re.search(r'name="csrf_token"[^>]*value="([^"]+)"', text)
                 or re.search(r'"X-CSRFToken": "([^"]+)"', text))
        if found:
            self.csrf = found.group(1)

    def get(self, path: str, htmx: bool = False, timeout: float = 10) -> tuple[int, dict[str, str], str]:
        headers = {"HX-Request": "true"} if htmx else {}
        status, answer_headers, text = _open(self._opener.open, urllib.request.Request(
            self.url + path, headers=headers), timeout)
        self._remember_token(text)
        return status, answer_headers, text

    def post(self, path: str, data: dict[str, Any] | None = None, htmx: bool = False,
             timeout: float = 30) -> tuple[int, dict[str, str], str]:
        fields = {"csrf_token": self.csrf, **(data or {})}
        body = urllib.parse.urlencode(fields, doseq=True).encode()
        headers = {"X-CSRFToken": self.csrf, **({"HX-Request": "true"} if htmx else {})}
        return _open(self._opener.open, urllib.request.Request(self.url + path, data=body,
                                                               headers=headers), timeout)

    def login(self, name: str, password: str) -> tuple[int, str]:
        """Log in through the form: (status, page)."""
        self.get("/login")
        status, _, page = self.post("/login", {"username": name, "password": password})
        if status == 200 and "Log out" in page:
            self._remember_token(page)
        return status, page
