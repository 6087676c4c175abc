"""Configuration delivery under one gunicorn (2 workers × 4 threads, SQLite), as `make run` serves it.

    .venv/bin/python -m bench delivery [--scale 0.25]      (or: make bench)

1. `304` answers per second to `GET /api/v1/services/<name>/config` with `If-None-Match` (a service
   token) against `/healthz` under the same server, in alternating one-second rounds (target ≥ 0.8);
2. time from a committed change (the PATCH's answer) until 200 services' callback receivers on
   127.0.0.1 are notified (goal ≤ 2 s), and until those 200 simulated services have fetched their
   configuration and acknowledged it (goal ≤ 5 s) — each service a `ConsoleClient` of
   clients/python, fetching with its ETag and acknowledging on a signed callback;
3. the peak memory (VmHWM) of the gunicorn master and workers.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "clients" / "python"))

from bench.stats import Run, benchmark, hammer, main, percentile  # noqa: E402

SERVICES = 200


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port: int, method: str, path: str, token: str, body: dict | None = None) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers={"Authorization": f"Bearer {token}",
                              "Content-Type": "application/json"})
        answer = conn.getresponse()
        data = answer.read()
        if answer.status >= 400:
            raise RuntimeError(f"{method} {path}: {answer.status} {data[:300]!r}")
        return json.loads(data) if data else {}
    finally:
        conn.close()


def peak_memory_mib(master: int) -> float:
    """VmHWM of the master and its children, in MiB."""
    pids = [master] + [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == master]
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _ppid(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class Fleet:
    """`n` simulated services behind one callback server: on a signed callback each fetches its
    configuration (If-None-Match) and acknowledges it; the times are recorded per version."""

    def __init__(self, console_port: int, tokens: dict[str, str]) -> None:
        from console_client import ConsoleClient, parse_notification

        self.parse = parse_notification
        self.port = free_port()
        self.clients = {name: ConsoleClient(f"http://127.0.0.1:{console_port}", token, name)
                        for name, token in tokens.items()}
        self.notified: dict[int, list[float]] = {}
        self.acked: dict[int, list[float]] = {}
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=16)
        fleet = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                name = self.path.strip("/")
                client = fleet.clients.get(name)
                if client is None or not client.verify_signature(
                        body, self.headers.get("X-Console-Signature")):
                    self.send_response(401)
                    self.end_headers()
                    return
                note = fleet.parse(body, name)
                with fleet.lock:
                    fleet.notified.setdefault(note.version, []).append(time.monotonic())
                self.send_response(204)
                self.end_headers()
                fleet.pool.submit(fleet.apply, client)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def apply(self, client) -> None:
        config = client.fetch()
        if config is None:
            return
        client.ack(config.version, "applied")
        with self.lock:
            self.acked.setdefault(config.version, []).append(time.monotonic())

    def register_all(self) -> None:
        def one(name: str) -> None:
            client = self.clients[name]
            client.register(["mqtt"], callback_url=f"http://127.0.0.1:{self.port}/{name}")
            client.fetch()
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(one, self.clients))

    def wait(self, version: int, n: int, timeout: float = 30.0) -> tuple[float | None, float | None]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                notified, acked = self.notified.get(version, []), self.acked.get(version, [])
                if len(notified) >= n and len(acked) >= n:
                    return max(notified), max(acked)
            time.sleep(0.005)
        with self.lock:
            raise RuntimeError(f"v{version}: {len(self.notified.get(version, []))} notified, "
                               f"{len(self.acked.get(version, []))} acknowledged of {n}")

    def close(self) -> None:
        self.server.shutdown()
        self.pool.shutdown(wait=True)


@benchmark("delivery", "configuration delivery: 304 vs /healthz, 200 callbacks and acks, memory")
def delivery(run: Run) -> None:
    n = run.n(SERVICES)
    instance = tempfile.mkdtemp(prefix="bench-delivery-")
    port = free_port()
    env = {**os.environ, "CONSOLE_INSTANCE_PATH": instance, "CONSOLE_CHECK_SCHEDULER": "false",
           "CONSOLE_BIND": f"127.0.0.1:{port}", "CONSOLE_DELIVERY_POLL_SECONDS": "1"}
    flask = [sys.executable, "-m", "flask", "--app", "app"]
    subprocess.run([*flask, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    admin = subprocess.run([*flask, "tokens", "create", "bench-admin", "--role", "admin"], cwd=ROOT,
                           env=env, check=True, capture_output=True, text=True).stdout.strip()
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py",
                               "app:app"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    fleet = None
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
        call(port, "PATCH", "/api/v1/brokers/mqtt", admin, {"enabled": True})
        tokens = {}
        for i in range(n):
            name = f"svc-{i:03d}"
            tokens[name] = call(port, "POST", "/api/v1/tokens", admin,
                                {"name": f"{name}-token", "role": "service", "service": name})["token"]
        fleet = Fleet(port, tokens)
        fleet.register_all()
        first = next(iter(fleet.clients.values()))
        run.say(f"  {n} services registered with callbacks on 127.0.0.1:{fleet.port}")

        headers = {"Authorization": f"Bearer {first.token}", "If-None-Match": f'"{first.etag}"'}
        path = f"/api/v1/services/{first.service}/config"
        run.compare("304 answers vs /healthz (req/s, 4 keep-alive clients, 1 s per sample)", {
            "304": lambda: hammer(port, path, 1.0, headers=headers,
                                  ok=(304,)).raise_errors().per_second,
            "healthz": lambda: hammer(port, "/healthz", 1.0).raise_errors().per_second},
            rounds=6, per_round=1, warmup=1, target=0.8, sample=lambda fn: fn(), unit="req/s",
            higher_is_better=True)

        notify, ack = [], []
        for r in range(run.n(8)):
            started = time.monotonic()
            version = call(port, "PATCH", "/api/v1/brokers/mqtt", admin,
                           {"host": f"mqtt-{r}.example"})["version"]
            committed = time.monotonic()
            last_notified, last_acked = fleet.wait(version, n)
            notify.append(last_notified - committed)
            ack.append(last_acked - committed)
            run.say(f"    change v{version}: PATCH {1000 * (committed - started):.0f} ms, all {n} "
                    f"notified +{1000 * notify[-1]:.0f} ms, all fetched and acknowledged "
                    f"+{1000 * ack[-1]:.0f} ms")
        notify.sort()
        ack.sort()
        run.value(f"commit → {n} receivers notified, p50 of {len(notify)}", percentile(notify, 0.5),
                  "s", "≤ 2 s", percentile(notify, 0.5) <= 2)
        run.value(f"commit → {n} receivers notified, max", notify[-1], "s", "≤ 2 s", notify[-1] <= 2)
        run.value(f"commit → {n} services fetched and acknowledged, p50", percentile(ack, 0.5), "s",
                  "≤ 5 s", percentile(ack, 0.5) <= 5)
        run.value(f"commit → {n} services fetched and acknowledged, max", ack[-1], "s", "≤ 5 s",
                  ack[-1] <= 5)
        run.value("peak memory of gunicorn (master + 2 workers, VmHWM)",
                  peak_memory_mib(server.pid), "MiB")
    finally:
        if fleet is not None:
            fleet.close()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


if __name__ == "__main__":
    main(only="delivery")
