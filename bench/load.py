"""Load: /healthz, /readyz and the Settings → Messaging page under concurrent clients, first on an idle
console, then while 50 diagnoses and 40 clients pressing Check now hit brokers that never answer.

    .venv/bin/python -m bench load [--scale 0.5]      (or: make bench)

One gunicorn as `make run` serves it (2 workers × 4 threads, SQLite; `BENCH_DATABASE_URL` for another
database), MQTT pointed at the lab's silent port (accepts TCP, never answers: every check and
diagnosis there takes its whole 5 s timeout), NATS at the lab's NATS. For each phase and path: 4
keep-alive clients for 10 s (× scale), throughput, p50/p90/p99 and errors (goal: zero errors; a
status other than 200 — /readyz: 200 or 503 — or a failed connection is one). Under load, 50 API
diagnoses are queued (`?wait=false`) and 40 clients press Check now in a loop, 0.2 s apart (in a
process of their own, so that their threads do not slow the measuring clients); their own answers
(202/200, or 429 when the broker-work pool is full) are counted apart: 429 is their designed answer.
"""
from __future__ import annotations

import http.client
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench.stats import Load, Run, benchmark, hammer, main, percentile  # noqa: E402

CLIENTS = 4            # per path
DIAGNOSES = 50
CHECKERS = 40
PASSWORD = "bench-admin-password"


def lab() -> dict:
    import brokerlab

    data = brokerlab.load(os.environ.get("BROKERLAB_DIR") or None)
    if data is None:
        sys.exit("The broker lab is not running: make brokers")
    return data


def press_check_now(port: int, cookie: str, csrf: str, seconds: float,
                    results: multiprocessing.Queue) -> None:
    """`CHECKERS` clients pressing Check now (htmx) in a loop for `seconds`, 0.2 s apart; the count
    of each answer's status goes to `results`."""
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    body = f"csrf_token={csrf}".encode()
    headers = {"Cookie": cookie, "X-CSRFToken": csrf, "HX-Request": "true",
               "Content-Type": "application/x-www-form-urlencoded"}

    def client() -> None:
        while time.monotonic() < stop:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("POST", "/settings/messaging/mqtt/check", body=body, headers=headers)
                answer = conn.getresponse()
                answer.read()
                conn.close()
                status = str(answer.status)
            except (OSError, http.client.HTTPException) as exc:
                status = type(exc).__name__
            with lock:
                counts[f"check now {status}"] += 1
            time.sleep(0.2)

    pool = [threading.Thread(target=client) for _ in range(CHECKERS)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    results.put(dict(counts))


def _phase(run: Run, name: str, port: int, cookie: str, seconds: float) -> dict[str, Load]:
    """The three paths at once, `CLIENTS` each, for `seconds`."""
    paths = {"/healthz": (200,), "/readyz": (200, 503), "/settings/messaging": (200,)}
    loads: dict[str, Load] = {}

    def drive(path: str, ok: tuple[int, ...]) -> None:
        headers = {"Cookie": cookie} if path.startswith("/settings") else {}
        loads[path] = hammer(port, path, seconds, threads=CLIENTS, headers=headers, ok=ok, timeout=15)

    drivers = [threading.Thread(target=drive, args=item) for item in paths.items()]
    for t in drivers:
        t.start()
    for t in drivers:
        t.join()
    for path, load in loads.items():
        run.value(f"{name} {path} throughput", load.per_second, "req/s")
        run.value(f"{name} {path} errors", len(load.errors), "", "0", not load.errors)
        if load.errors:
            run.note(f"{name} {path} first errors: {Counter(load.errors).most_common(3)}")
    return loads


@benchmark("load", "/healthz, /readyz and the page under concurrent clients, idle and while 50 "
                   "diagnoses and 40 checks hit silent brokers")
def load(run: Run) -> None:
    from tests.live_gunicorn import Browser, Gunicorn, api, prepare

    data = lab()
    seconds = max(2.0, 10.0 * run.scale)
    instance = Path(tempfile.mkdtemp(prefix="bench-load-"))
    env = {**os.environ, "CONSOLE_INSTANCE_PATH": str(instance), "CONSOLE_CHECK_TIMEOUT": "5",
           "CONSOLE_DELIVERY_WORKER": "false", "CONSOLE_READY_CACHE_SECONDS": "1",
           "SP_MQTT_ENABLED": "true", "SP_MQTT_HOST": "127.0.0.1",
           "SP_MQTT_PORT": str(data["faults"]["silent"]),
           "SP_NATS_ENABLED": "true", "SP_NATS_HOST": "127.0.0.1",
           "SP_NATS_PORT": str(data["brokers"]["nats"]["plain"])}
    if os.environ.get("BENCH_DATABASE_URL"):
        env["CONSOLE_DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]
    token = prepare(env, PASSWORD)
    server = Gunicorn(env, instance / "logs", workers=2, threads=4)
    with server:
        server.wait_all_workers()
        browser = Browser(server.url)
        status, _ = browser.login("admin", PASSWORD)
        assert status == 200, "log-in failed"
        browser.get("/settings/messaging")
        cookie = "; ".join(f"{c.name}={c.value}" for c in browser.jar)
        run.say(f"  gunicorn 2 workers × 4 threads on {server.url}; {CLIENTS} clients per path, "
                f"{seconds:g} s per phase")

        idle = _phase(run, "idle", server.port, cookie, seconds)

        answers: Counter[str] = Counter()
        ids: list[int] = []
        lock = threading.Lock()

        def diagnose() -> None:
            try:
                status, _, body = api(server.url, "POST", "/api/v1/brokers/mqtt/diagnose?wait=false",
                                      token, timeout=30)
            except OSError as exc:          # a console whose web threads are all taken
                status, body = type(exc).__name__, None
            with lock:
                answers[f"diagnose {status}"] += 1
                if status == 202:
                    ids.append(body["id"])

        started = time.monotonic()
        queued = [threading.Thread(target=diagnose) for _ in range(DIAGNOSES)]
        for t in queued:
            t.start()
        for t in queued:
            t.join()
        run.say(f"  {DIAGNOSES} diagnoses queued in {time.monotonic() - started:.1f} s: "
                f"{dict(answers)}")
        # the Check-now clients in a process of their own: their threads do not slow the clients
        # that measure (one interpreter lock)
        results: multiprocessing.Queue = multiprocessing.get_context("fork").Queue()
        pressing = multiprocessing.get_context("fork").Process(
            target=press_check_now, args=(server.port, cookie, browser.csrf, seconds + 1, results))
        pressing.start()
        loaded = _phase(run, "under load", server.port, cookie, seconds)
        running = sum(api(server.url, "GET", f"/api/v1/diagnoses/{i}", token)[2]["status"] == "running"
                      for i in ids)
        pressing.join(60)
        answers.update(results.get(timeout=10))
        run.say(f"  answers to the diagnoses and Check now: {dict(sorted(answers.items()))}; "
                f"{running} of the {len(ids)} diagnoses still queued or running after the phase")
        for path in idle:
            run.distributions(f"{path} latency, idle vs under load", {
                "idle": idle[path].latencies_ms, "under load": loaded[path].latencies_ms})
        for path in ("/healthz", "/readyz"):
            p99 = percentile(sorted(loaded[path].latencies_ms), 0.99)
            run.value(f"under load {path} p99", p99, "ms", "milliseconds, not the 5 s check timeout",
                      p99 < 1000)


if __name__ == "__main__":
    main(only="load")
