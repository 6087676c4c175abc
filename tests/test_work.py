"""The bounded broker-work pool (console/work.py) in a real gunicorn worker over real HTTP, against the
lab's silent port (accepts TCP, never says a word: every check and diagnosis there takes its whole
timeout): slow work never takes the web threads that /healthz, /readyz and the pages need; beyond
the bounds the answer is 429 with Retry-After; API timeouts are capped."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ADMIN_PASSWORD
from tests.live_gunicorn import Browser, Gunicorn, api, get, prepare

THREADS, QUEUE = 2, 2          # broker-work threads, queued diagnoses
WEB_THREADS = 4                # of the one gunicorn worker; at most 2 of them wait for brokers


@pytest.fixture
def slow_console(tmp_path: Path, lab):
    """One gunicorn worker with 4 web threads, MQTT pointed at the silent port, a small pool."""
    env = {**os.environ, "CONSOLE_INSTANCE_PATH": str(tmp_path / "instance"),
           "CONSOLE_CHECK_SCHEDULER": "false", "CONSOLE_DELIVERY_WORKER": "false",
           "CONSOLE_CHECK_TIMEOUT": "3", "CONSOLE_BROKER_WORK_THREADS": str(THREADS),
           "CONSOLE_BROKER_WORK_QUEUE": str(QUEUE), "CONSOLE_BROKER_WORK_WAITING": "2",
           "SP_MQTT_ENABLED": "true", "SP_MQTT_HOST": "127.0.0.1",
           "SP_MQTT_PORT": str(lab["faults"]["silent"])}
    token = prepare(env, ADMIN_PASSWORD)
    server = Gunicorn(env, tmp_path / "logs", workers=1, threads=WEB_THREADS)
    with server:
        server.wait_all_workers()
        yield server, token
    log = server.log()
    assert "Traceback" not in log and "Worker exiting" in log, log[-3000:]


def _healthy(url: str) -> None:
    """/healthz is 200 and /readyz answers its document (503: MQTT is not up), on new connections,
    with a client timeout far below the slow work's."""
    status, _, body = get(url, "/healthz", timeout=2.5)
    assert (status, body.strip()) == (200, '{"status":"ok"}')
    status, _, body = get(url, "/readyz", timeout=2.5)
    assert status in (200, 503) and '"brokers"' in body


def _finished(url: str, token: str, run_id: int) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, _, body = api(url, "GET", f"/api/v1/diagnoses/{run_id}", token)
        assert status == 200
        if body["status"] != "running":
            return body
        time.sleep(0.2)
    raise AssertionError(f"diagnosis {run_id} never finished: {body}")


def test_queued_diagnoses_beyond_the_bound_are_429_and_health_answers(slow_console) -> None:
    server, token = slow_console
    url = server.url
    admin = Browser(url)
    assert admin.login("admin", ADMIN_PASSWORD)[0] == 200
    admin.get("/settings/messaging")
    queued = [api(url, "POST", "/api/v1/brokers/mqtt/diagnose?wait=false&timeout=8", token)
              for _ in range(THREADS + QUEUE)]
    assert [s for s, _, _ in queued] == [202] * (THREADS + QUEUE), queued
    assert all(h["Location"].endswith(f"/api/v1/diagnoses/{b['id']}") for _, h, b in queued)
    status, headers, body = api(url, "POST", "/api/v1/brokers/mqtt/diagnose?wait=false", token)
    assert status == 429 and body["error"] == "busy" and int(headers["Retry-After"]) >= 1
    assert f"Try again in {headers['Retry-After']} s" in body["message"]
    _healthy(url)
    status, headers, body = api(url, "POST", "/api/v1/brokers/mqtt/diagnose", token)
    assert status == 429 and "Retry-After" in headers, "no free thread: a waiting request is refused"
    status, headers, html = admin.post("/settings/messaging/mqtt/check", htmx=True)
    assert status == 429 and "Busy, try again in" in html
    assert (headers["HX-Retarget"], headers["HX-Reswap"]) == ("#mqtt-busy", "innerHTML")
    status, _, fragment = admin.get("/settings/messaging/mqtt/status", htmx=True)
    assert status == 200 and 'id="mqtt-busy"' in fragment, "the place the message goes to"
    status, headers, html = admin.post("/settings/messaging/mqtt/diagnose", htmx=True)
    assert status == 429 and "Busy, try again in" in html and "Retry-After" in headers
    status, _, html = admin.post("/settings/messaging/mqtt/test", {"keepalive": "30"},
                                 htmx=True)
    assert status == 429 and "Busy, try again in" in html, html
    status, _, html = admin.post("/settings/messaging/mqtt", {"username": "someone"}, htmx=True)
    assert status == 429 and "Busy, try again in" in html and 'id="mqtt"' in html, html
    assert "Saved" not in html
    status, _, page = admin.post("/settings/messaging/mqtt/check")     # no JavaScript: a page
    assert status == 429 and "<h1>Busy</h1>" in page and "Busy, try again in" in page
    _healthy(url)

    done = [_finished(url, token, b["id"]) for _, _, b in queued]
    assert {d["status"] for d in done} == {"done"}
    assert {d["cause"] for d in done} <= {"handshake_timeout", "connect_timeout"}, done
    status, _, body = api(url, "POST", "/api/v1/brokers/mqtt/diagnose?timeout=1", token)
    assert status == 200 and body["ok"] is False, "room again once the queue drained"


def test_waiting_requests_never_take_every_web_thread(slow_console) -> None:
    """Eight synchronous diagnoses and Check-nows at once (twice the web threads): at most two wait
    for the silent broker, the others are refused at once, and /healthz and /readyz still answer
    while those two wait their whole 3 s."""
    server, token = slow_console
    url = server.url
    admin = Browser(url)
    assert admin.login("admin", ADMIN_PASSWORD)[0] == 200
    admin.get("/settings/messaging")
    answers: list[int] = []
    lock = threading.Lock()

    def diagnose() -> None:
        status, _, _ = api(url, "POST", "/api/v1/brokers/mqtt/diagnose?timeout=3", token)
        with lock:
            answers.append(status)

    def check_now() -> None:
        status, _, _ = admin.post("/settings/messaging/mqtt/check", htmx=True)
        with lock:
            answers.append(status)

    crowd = [threading.Thread(target=diagnose if i % 2 else check_now) for i in range(2 * WEB_THREADS)]
    for t in crowd:
        t.start()
    time.sleep(0.5)
    _healthy(url)
    for t in crowd:
        t.join()
    assert len(answers) == 2 * WEB_THREADS
    assert answers.count(429) >= 2 * WEB_THREADS - 2 and set(answers) <= {200, 429}, answers
    assert answers.count(200) >= 1, answers


def test_api_diagnose_timeout_is_capped(slow_console) -> None:
    server, token = slow_console
    for value in ("300", "30.5", "0", "x"):
        status, _, body = api(server.url, "POST", f"/api/v1/brokers/mqtt/diagnose?timeout={value}",
                              token)
        assert status == 400 and "timeout" in body["errors"], (value, body)
    assert "0.1 to 30 seconds" in body["errors"]["timeout"] or "number" in body["errors"]["timeout"]
    status, _, body = api(server.url, "POST", "/api/v1/brokers/mqtt/diagnose?timeout=300", token)
    assert "CONSOLE_DIAGNOSE_MAX_TIMEOUT" in body["errors"]["timeout"]
    status, _, body = api(server.url, "POST", "/api/v1/brokers/mqtt/diagnose?wait=maybe", token)
    assert status == 400 and "wait" in body["errors"]


def test_the_api_document_names_the_queued_and_busy_answers(client) -> None:
    op = client.get("/api/v1/openapi.json").get_json()["paths"]["/brokers/{protocol}/diagnose"]["post"]
    assert {"200", "202", "400", "429"} <= set(op["responses"])
    assert {p["name"] for p in op["parameters"]} == {"protocol", "timeout", "wait"}


@pytest.mark.parametrize("threads,wanted,limit", [(4, 8, 3), (4, 2, 2), (1, 5, 1), (16, 2, 2)])
def test_waiting_requests_stay_below_the_web_threads(tmp_path: Path, threads: int, wanted: int,
                                                     limit: int) -> None:
    from console import work
    from tests.conftest import make_app

    app = make_app(tmp_path / "i", THREADS=threads, BROKER_WORK_WAITING=wanted)
    pool = work.pool(app)
    try:
        assert pool.waiting_limit == limit and pool.threads == app.config["BROKER_WORK_THREADS"]
    finally:
        work.stop(app)
