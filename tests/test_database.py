"""A missing database (console/database.py, console/background.py): gunicorn started on a PostgreSQL
that does not answer serves anyway — /healthz, the API and /readyz answer JSON 503 with the
reason, /metrics 200 with messaging_console_database_up 0, pages a readable "Database unreachable"
page — logs one line instead of a traceback per attempt, and recovers by itself when the database
comes (a TCP forwarder opened on the port of CONSOLE_DATABASE_URL), starting its background work
then — and again when the database goes away and comes back while it runs. A missing SQLite
directory answers the same 503 until the database is there."""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from console.api.openapi import openapi_document
from console.database import Outage
from tests.conftest import _TEMPLATE_DB, ROOT, _create, make_app
from tests.live_gunicorn import pg_database as _pg_database

PG = ("127.0.0.1", 5432)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Forwarder:
    """TCP from 127.0.0.1:<port> to the real PostgreSQL: the database "comes back" when it opens."""

    def __init__(self, port: int) -> None:
        self.server = socket.create_server(("127.0.0.1", port))
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(PG)
            self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, target):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        """Stop accepting and cut every forwarded connection (as a database going away does); a
        shutdown first, as close() alone leaves a thread blocked in accept() or recv() running."""
        for s in (self.server, *self.open):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def _get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET; (0, "", reason) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()
    except OSError as exc:
        return 0, "", str(exc)


def _until(what, timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(message)


def test_gunicorn_without_its_database_answers_503_and_recovers_by_itself(tmp_path: Path) -> None:
    real = _pg_database("outage")
    port = _free_port()                       # nothing listens here until the forwarder opens
    proxied = real.replace("127.0.0.1:5432", f"127.0.0.1:{port}")
    flask = [sys.executable, "-m", "flask", "--app", "app"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SP_", "CONSOLE_"))}
    env.update({"CONSOLE_INSTANCE_PATH": str(tmp_path), "CONSOLE_WORKERS": "1",
                "CONSOLE_CHECK_INTERVAL": "1", "CONSOLE_CHECK_TIMEOUT": "1",
                "SP_NATS_ENABLED": "true", "SP_NATS_HOST": "127.0.0.1",
                "SP_NATS_PORT": str(_free_port())})
    subprocess.run([*flask, "db", "upgrade"], cwd=ROOT, env={**env, "CONSOLE_DATABASE_URL": real},
                   check=True, capture_output=True, timeout=120)
    web = _free_port()
    base = f"http://127.0.0.1:{web}"
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "app:app"], cwd=ROOT,
            env={**env, "CONSOLE_DATABASE_URL": proxied, "CONSOLE_BIND": f"127.0.0.1:{web}"},
            stdout=subprocess.DEVNULL, stderr=out, start_new_session=True)
    forwarder = None
    try:
        status, kind, body = _until(lambda: (a := _get(base + "/healthz"))[0] and a, 60,
                                    "gunicorn did not answer at all")
        assert status == 503 and kind == "application/json", body
        health = json.loads(body)
        assert health["status"] == "error" and health["database"] == "unreachable"
        assert "Connection refused" in health["reason"], health
        status, kind, page = _get(base + "/settings/messaging")
        assert status == 503 and kind.startswith("text/html")
        assert "<h1>Database unreachable</h1>" in page and "Connection refused" in page
        assert "Traceback" not in page
        for path in ("/api/v1/brokers", "/readyz"):
            status, kind, body = _get(base + path)
            assert status == 503 and kind == "application/json", (path, body)
            assert json.loads(body)["database"] == "unreachable"
        status, kind, body = _get(base + "/metrics")      # scraped on: the alert rule needs it
        assert status == 200 and kind.startswith("text/plain"), body
        assert "messaging_console_database_up 0.0" in body and "messaging_broker_up" not in body
        time.sleep(2)                         # a few more failed attempts of the waiting worker
        forwarder = Forwarder(port)
        _until(lambda: _get(base + "/healthz")[0] == 200, 30, "no recovery after the database came")
        engine = sa.create_engine(real)
        try:
            def background_ran() -> bool:
                with engine.connect() as conn:
                    audited = conn.execute(sa.text(
                        "SELECT count(*) FROM audit_entries WHERE action = 'environment'")).scalar()
                    checked = conn.execute(sa.text(
                        "SELECT count(*) FROM broker_checks WHERE protocol = 'nats'")).scalar()
                return bool(audited and checked)
            _until(background_ran, 30, "the background work did not start after the recovery")
        finally:
            engine.dispose()
        status, _, body = _get(base + "/readyz")
        assert json.loads(body)["brokers"]["nats"]["status"] == "down"      # checked: nothing there
        assert _get(base + "/login")[0] == 200
        forwarder.close()                     # away again while it runs (pooled connections die)
        _until(lambda: _get(base + "/healthz")[0] == 503, 30, "no 503 after the database went")
        assert _get(base + "/api/v1/brokers")[0] == 503
        time.sleep(3)                         # the checks and the delivery worker keep failing
        forwarder = Forwarder(port)
        _until(lambda: _get(base + "/healthz")[0] == 200, 30, "no recovery the second time")
        assert _get(base + "/login")[0] == 200
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
        if forwarder is not None:
            forwarder.close()
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert text.count("database unreachable:") == 2, text       # one line per outage
    assert text.count("database reachable again") == 2, text
    assert "database reachable: background checks and callback delivery start" in text


def _entrypoint(env: dict[str, str], log: Path) -> subprocess.Popen:
    """docker/entrypoint.sh as the image runs it ("serve"), with this interpreter's flask and gunicorn."""
    path = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    with log.open("ab") as out:
        return subprocess.Popen(["sh", str(ROOT / "docker" / "entrypoint.sh"), "serve"], cwd=ROOT,
                                env={**env, "PATH": path}, stdout=out, stderr=out, start_new_session=True)


def test_the_image_entrypoint_serves_while_the_database_is_away_and_migrates_when_it_comes(tmp_path: Path) -> None:
    """The entrypoint used to give up after ten failed migration attempts, so a container started before
    its database never served. Now it serves at once (503 naming the reason), migrates and makes the first
    admin in the background when the database comes, and the console recovers by itself; started again on
    the migrated database it migrates first and serves, creating no second admin."""
    real = _pg_database("entrypoint")            # empty: no tables yet
    port = _free_port()
    web = _free_port()
    base = f"http://127.0.0.1:{web}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SP_", "CONSOLE_"))}
    env.update({"CONSOLE_INSTANCE_PATH": str(tmp_path), "CONSOLE_WORKERS": "1", "CONSOLE_CHECK_TIMEOUT": "1",
                "CONSOLE_DATABASE_URL": real.replace("127.0.0.1:5432", f"127.0.0.1:{port}"),
                "CONSOLE_BIND": f"127.0.0.1:{web}", "CONSOLE_ADMIN_PASSWORD": "entrypoint-admin-1"})
    log = tmp_path / "entrypoint.log"
    server = _entrypoint(env, log)
    forwarder = None
    try:
        status, _, body = _until(lambda: (a := _get(base + "/healthz"))[0] and a, 90,
                                 "the entrypoint served nothing while the database was away")
        assert status == 503 and json.loads(body)["database"] == "unreachable", body
        assert "serving anyway" in log.read_text()
        forwarder = Forwarder(port)
        _until(lambda: "database migrated at attempt" in log.read_text(), 90,
               "no migration after the database came:\n" + log.read_text()[-3000:])
        _until(lambda: "background checks and callback delivery start" in log.read_text(), 60,
               "the background work did not start after the migration:\n" + log.read_text()[-3000:])
        assert _get(base + "/healthz")[0] == 200 and _get(base + "/login")[0] == 200
        assert "Created admin 'admin'" in log.read_text()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    engine = sa.create_engine(real)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM users")).scalar() == 1
    finally:
        engine.dispose()
    before = log.read_text()
    server = _entrypoint(env, log)               # the database is there from the start
    try:
        _until(lambda: _get(base + "/healthz")[0] == 200, 90, "no start on a migrated database")
        again = log.read_text()[len(before):]
        assert "serving anyway" not in again and "Users exist; no admin created." in again, again
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
        forwarder.close()
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def test_a_missing_sqlite_directory_answers_503_until_the_database_is_there(tmp_path: Path) -> None:
    make_app(tmp_path / "template")           # a migrated database to put there later
    missing = tmp_path / "volume" / "not-mounted-yet"
    app = _create(tmp_path / "instance", SQLALCHEMY_DATABASE_URI=f"sqlite:///{missing / 'console.db'}")
    client = app.test_client()
    answer = client.get("/healthz")
    assert answer.status_code == 503
    assert answer.get_json()["reason"] == "unable to open database file"
    page = client.get("/login")
    assert page.status_code == 503 and b"Database unreachable" in page.data
    api = client.get("/api/v1/brokers")
    assert api.status_code == 503 and api.get_json()["error"] == "database_unavailable"
    assert "503" in openapi_document()["paths"]["/brokers"]["get"]["responses"]      # documented
    metrics = client.get("/metrics")          # 200, saying so (deploy/prometheus/alerts.yml)
    assert metrics.status_code == 200, metrics.data[:300]
    assert b"messaging_console_database_up 0.0" in metrics.data
    assert b"messaging_config_version" not in metrics.data
    missing.mkdir(parents=True)               # there, but empty: not migrated
    time.sleep(1.1)                           # the next probe after PROBE_SECONDS finds it
    assert client.get("/healthz").status_code == 200
    bare = client.get("/api/v1/brokers", headers={"Authorization": "Bearer mc_x"})
    assert bare.status_code == 503 and bare.get_json()["database"] == "error"
    assert "The database has no console tables" in bare.get_json()["message"]
    assert "run `flask db upgrade`" in bare.get_json()["message"]
    shutil.copy(_TEMPLATE_DB["db"], missing / "console.db")
    assert client.get("/login").status_code == 200
    assert client.get("/api/v1/brokers").status_code == 401      # answers again: asks for a token


def test_postgresql_without_the_console_tables_answers_503_not_set_up(tmp_path: Path, caplog) -> None:
    """PostgreSQL says "relation ... does not exist" as a ProgrammingError (SQLite's "no such table" is an
    OperationalError): the same 503 "not set up", and the background work waits without a traceback."""
    from console import background

    app = _create(tmp_path, SQLALCHEMY_DATABASE_URI=_pg_database("empty"))
    client = app.test_client()
    assert client.get("/healthz").status_code == 200          # liveness: the database answers
    bare = client.get("/api/v1/brokers", headers={"Authorization": "Bearer mc_x"})
    assert bare.status_code == 503 and bare.get_json()["database"] == "error", bare.data
    assert "The database has no console tables" in bare.get_json()["message"]
    assert 'relation "' in bare.get_json()["reason"]
    page = client.post("/login", data={"username": "admin", "password": "x"})
    assert page.status_code == 503 and b"Database not set up" in page.data and b"Traceback" not in page.data
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        why = background._prepare(app, False)
    assert isinstance(why, str) and "does not exist" in why
    assert not any(r.exc_info for r in caplog.records)
    assert not app.extensions["console_database"].down           # no outage: it answers
    with app.app_context():
        from console.extensions import db
        db.engine.dispose()


def test_a_login_while_the_database_is_away_logs_lines_not_tracebacks(tmp_path: Path, caplog) -> None:
    """The login limiter keeps its counters in the database: Flask-Limiter's "Failed to rate limit" comes
    as one line with the database's reason (console.ratelimit.OneLine), not a traceback per attempt."""
    app = _create(tmp_path / "instance", SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'gone' / 'console.db'}")
    with caplog.at_level(logging.WARNING):
        answer = app.test_client().post("/login", data={"username": "admin", "password": "wrong"})
    assert answer.status_code == 503 and b"Database unreachable" in answer.data
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    limiter = [r.getMessage() for r in caplog.records if r.name == "flask-limiter"]
    assert limiter == ["Failed to rate limit. Swallowing error: unable to open database file"]


def test_an_outage_is_logged_once_and_its_end_once(caplog) -> None:
    outage = Outage()
    with caplog.at_level(logging.WARNING, logger="console.database"):
        for _ in range(50):
            outage.failed("connection refused")
        outage.recovered()
        outage.recovered()
        outage.failed("connection refused")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == ("Messaging Console: database unreachable: connection refused (retrying; "
                        "requests answer 503 until it is back)")
    assert lines[1].startswith("Messaging Console: database reachable again after ")
    assert lines[1].endswith("(50 failed attempts)")
    assert len(lines) == 3 and lines[2] == lines[0]
