"""The delivery tests' shared parts: a registered service `edge` with its own token, and watches
held on threads of the test client."""
from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from flask import Flask

from console.delivery import watch
from tests.conftest import ADMIN_PASSWORD, add_user, make_token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def edge(app: Flask) -> dict[str, Any]:
    add_user(app, "admin", "admin", ADMIN_PASSWORD)
    admin = bearer(make_token(app, "ops", "admin"))
    client = app.test_client()
    assert client.patch("/api/v1/brokers/mqtt", headers=admin, json={
        "enabled": True, "host": "127.0.0.1", "username": "edge", "password": "watch-Secret-91"}).status_code == 200
    assert client.post("/api/v1/services", headers=admin,
                       json={"name": "edge", "protocols": ["mqtt"]}).status_code == 201
    own = bearer(make_token(app, "edge-token", "service", "edge"))
    first = client.get("/api/v1/services/edge/config", headers=own)
    assert first.status_code == 200
    return {"client": client, "admin": admin, "own": own, "etag": first.headers["ETag"].strip('"')}


def _watch(app: Flask, headers: dict[str, str], wait: int, out: dict[str, Any]) -> threading.Thread:
    def run() -> None:
        started = time.monotonic()
        response = app.test_client().get(f"/api/v1/services/edge/config?wait={wait}", headers=headers)
        out.update(status=response.status_code, etag=response.headers.get("ETag", "").strip('"'),
                   body=response.get_json(silent=True), seconds=time.monotonic() - started)
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _until_held(app: Flask, count: int = 1) -> None:
    hub = watch.hub(app)
    for _ in range(200):
        if hub.held >= count:
            return
        time.sleep(0.01)
    raise AssertionError("the watch was not held")
