"""Watches of a service's configuration under one gunicorn worker as `make run` serves it (SQLite).

    .venv/bin/python -m bench watch [--scale 0.25]

1. watches held by the one worker (goal ≥ 2,000) and the worker's memory per held watch;
2. commit → every watcher answered (the PATCH's answer until the last watcher's 200) for 100, 1,000
   and 2,000 watchers (goal ≤ 2 s at 2,000) — SERVICES registered services with their own tokens,
   the watchers spread over them, each an asyncio connection of this process;
3. `/healthz` p50/p99 while they are held (goal p99 < 50 ms), one request at a time;
4. SQL statements and time of one one-field API PATCH with 20 and 200 registered services (in
   process, counted with an SQLAlchemy cursor event; goal: the same small number for both).
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.delivery import call, free_port  # noqa: E402
from bench.stats import Run, benchmark, main, percentile  # noqa: E402

SERVICES = 200
STEPS = (100, 1000, 2000)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def worker_of(master: int) -> int:
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                status = Path(f"/proc/{p}/status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{master}\n" in status:
                return int(p)
    raise RuntimeError("no gunicorn worker")


async def _watch(port: int, service: str, token: str, etag: str, answered: list[float]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write((f"GET /api/v1/services/{service}/config?wait=300 HTTP/1.1\r\nHost: bench\r\n"
                  f"Authorization: Bearer {token}\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n"
                  ).encode())
    await writer.drain()
    head = await reader.readline()
    await reader.read()
    answered.append(time.monotonic())
    writer.close()
    return int(head.split()[1])


async def _healthz(port: int, count: int) -> list[float]:
    out = []
    for _ in range(count):
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        await writer.drain()
        await reader.read()
        out.append(1000 * (time.monotonic() - started))
        writer.close()
        await asyncio.sleep(0.01)
    return out


async def _round(run: Run, port: int, worker: int, admin: str, watchers: int,
                 services: list[tuple[str, str, str]], r: int) -> None:
    before = rss_kib(worker)
    answered: list[float] = []
    tasks = []
    for i in range(watchers):
        name, token, etag = services[i % len(services)]
        tasks.append(asyncio.ensure_future(_watch(port, name, token, etag, answered)))
        if i % 100 == 99:
            await asyncio.sleep(0.05)
    await asyncio.sleep(2 + watchers / 1000)          # every request read and held
    early = len(answered)
    held_kib = rss_kib(worker) - before
    latencies = sorted(await _healthz(port, run.n(200)))
    started = time.monotonic()
    version = await asyncio.to_thread(call, port, "PATCH", "/api/v1/brokers/mqtt", admin,
                                      {"keepalive": 30 + r})
    committed = time.monotonic()
    statuses = await asyncio.gather(*tasks)
    last = max(answered) - committed
    run.say(f"  {watchers} watchers: {early} answered before the change; PATCH "
            f"{1000 * (committed - started):.0f} ms (v{version['version']}); statuses "
            f"{sorted(set(statuses))}")
    run.value(f"{watchers} held: worker memory per held watch", held_kib / watchers, "KiB")
    run.value(f"{watchers} held: /healthz p50", percentile(latencies, 0.5), "ms")
    run.value(f"{watchers} held: /healthz p99", percentile(latencies, 0.99), "ms", "< 50 ms",
              percentile(latencies, 0.99) < 50)
    run.value(f"commit → all {watchers} watchers answered", last, "s", "≤ 2 s" if watchers >= 2000 else "",
              last <= 2 if watchers >= 2000 else None)


def _statements(run: Run) -> None:
    from sqlalchemy import event

    from console import create_app
    from console.extensions import db

    for services in (20, 200):
        instance = Path(tempfile.mkdtemp(prefix="bench-watch-sql-"))
        os.environ["CONSOLE_INSTANCE_PATH"] = str(instance)
        app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{instance / 'console.db'}",
                          "WTF_CSRF_ENABLED": False, "CHECK_SCHEDULER": False})
        from flask_migrate import upgrade

        with app.app_context():
            upgrade()
        env = {**os.environ, "CONSOLE_INSTANCE_PATH": str(instance),
               "CONSOLE_DATABASE_URL": f"sqlite:///{instance / 'console.db'}"}
        admin = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "tokens", "create", "ops",
                                "--role", "admin"], cwd=ROOT, env=env, check=True, capture_output=True,
                               text=True).stdout.strip()
        auth = {"Authorization": f"Bearer {admin}"}
        client = app.test_client()
        client.patch("/api/v1/brokers/mqtt", json={"enabled": True, "host": "127.0.0.1"}, headers=auth)
        for i in range(services):
            client.post("/api/v1/services", headers=auth, json={
                "name": f"edge-{i}", "protocols": ["mqtt"] if i % 2 else ["mqtt", "nats"]})
        statements: list[str] = []

        def count(conn, cursor, statement, *args, statements: list[str] = statements) -> None:
            statements.append(statement)

        with app.app_context():
            engine = db.engine
        event.listen(engine, "before_cursor_execute", count)
        started = time.monotonic()
        answer = client.patch("/api/v1/brokers/mqtt", json={"keepalive": 45}, headers=auth)
        took = time.monotonic() - started
        event.remove(engine, "before_cursor_execute", count)
        assert answer.status_code == 200, answer.get_json()
        run.value(f"one-field PATCH with {services} services: SQL statements", len(statements), "",
                  "the same for 20 and 200")
        run.value(f"one-field PATCH with {services} services: time", 1000 * took, "ms")


@benchmark("watch", "watches: held per worker, memory, commit → answered, /healthz while held, statements")
def watch(run: Run) -> None:
    instance = tempfile.mkdtemp(prefix="bench-watch-")
    port = free_port()
    env = {**os.environ, "CONSOLE_INSTANCE_PATH": instance, "CONSOLE_CHECK_SCHEDULER": "false",
           "CONSOLE_BIND": f"127.0.0.1:{port}", "CONSOLE_WORKERS": "1"}
    flask = [sys.executable, "-m", "flask", "--app", "app"]
    subprocess.run([*flask, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    admin = subprocess.run([*flask, "tokens", "create", "bench-admin", "--role", "admin"], cwd=ROOT,
                           env=env, check=True, capture_output=True, text=True).stdout.strip()
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "app:app"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                call(port, "GET", "/healthz", admin)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        worker = worker_of(server.pid)
        call(port, "PATCH", "/api/v1/brokers/mqtt", admin, {"enabled": True, "host": "127.0.0.1"})
        services = []
        for i in range(run.n(SERVICES)):
            name = f"svc-{i:03d}"
            token = call(port, "POST", "/api/v1/tokens", admin,
                         {"name": f"{name}-token", "role": "service", "service": name})["token"]
            call(port, "POST", "/api/v1/services", token, {"name": name, "protocols": ["mqtt"]})
            services.append((name, token))
        run.say(f"  {len(services)} services registered, one gunicorn worker (pid {worker}), "
                f"worker memory {rss_kib(worker) / 1024:.0f} MiB")
        for r, watchers in enumerate(STEPS):
            current = []
            for name, token in services:
                conn_etag = _etag(port, name, token)
                current.append((name, token, conn_etag))
            asyncio.run(_round(run, port, worker, admin, run.n(watchers), current, r))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    _statements(run)


def _etag(port: int, name: str, token: str) -> str:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", f"/api/v1/services/{name}/config", headers={"Authorization": f"Bearer {token}"})
        answer = conn.getresponse()
        answer.read()
        return answer.getheader("ETag") or ""
    finally:
        conn.close()


if __name__ == "__main__":
    main(only="watch")
