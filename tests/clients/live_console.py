"""The real console on real HTTP for the client's and the example service's tests: the Flask app on a
fresh database served by werkzeug in a thread, with its callback delivery worker; service tokens;
settings changed through the admin API; roll-out state and acknowledgements read back from it; and a
record of the HTTP requests it answered (a WSGI wrapper in front of it that only looks).

`fail_next` is the one thing the console itself never answers: canned answers of something in front of
it (a reverse proxy's 502/503, an HTML error page, a redirect of a mistyped URL, a cut-off or foreign
JSON document). Each entry answers one HTTP request in place of the console, and is recorded like the
others; the client's error mapping and retries are tested with them, everything else is the console's.
"""
from __future__ import annotations

import hashlib
import hmac
import io
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from console.adapters.service import find_service
from console.crypto import decrypt
from console.delivery import outbox, watch
from console.extensions import db
from tests.conftest import make_app, make_token

FAST_DELIVERY = {"DELIVERY_POLL_SECONDS": 0.2, "DELIVERY_RETRY_BASE": 0.2, "DELIVERY_RETRY_MAX": 1.0}


@dataclass
class Seen:
    """One request the console answered."""

    method: str
    path: str
    headers: dict[str, str]
    status: int


Canned = tuple[int, bytes, dict[str, str]]


class _Front:
    """WSGI middleware in front of the console: notes method, path, headers and status of every request
    and answers the next `fail_next` entry, when there is one, in the console's place."""

    def __init__(self, app: Callable, seen: list[Seen], fail_next: list[Canned]) -> None:
        self.app, self.seen, self.fail_next, self.lock = app, seen, fail_next, threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Any:
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        with self.lock:
            canned = self.fail_next.pop(0) if self.fail_next else None
        if canned is not None:
            status, body, extra = canned
            with self.lock:
                self.seen.append(Seen(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), headers, status))
            reason = HTTPStatus(status).phrase
            start_response(f"{status} {reason}", [*extra.items(), ("Content-Length", str(len(body)))])
            return [body]

        def noting(status: str, response_headers: list, *args: Any) -> Any:
            with self.lock:
                self.seen.append(Seen(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), headers,
                                      int(status.split()[0])))
            return start_response(status, response_headers, *args)

        return self.app(environ, noting)


class LiveConsole:
    """One real console: `url`, `app`, `admin_token`; `start()` serves it on 127.0.0.1 (`port` 0: a
    free one), `stop()` ends serving and the worker."""

    def __init__(self, instance: Path, **config: Any) -> None:
        self.instance = instance
        self.app: Flask = make_app(instance, **{**FAST_DELIVERY, **config})
        self.requests: list[Seen] = []
        self.fail_next: list[Canned] = []
        self._front = _Front(self.app, self.requests, self.fail_next)
        self.admin_token = make_token(self.app, "test-admin", "admin")
        self._api = self.app.test_client()
        self._server: BaseWSGIServer | None = None
        self._worker: outbox.Worker | None = None

    # -- serving ---------------------------------------------------------------------------------
    def start(self, port: int = 0) -> LiveConsole:
        """Serve on http://127.0.0.1:<port> with the delivery worker."""
        self._server = make_server("127.0.0.1", port, self._front, threaded=True)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        self.app.extensions.pop("console_delivery", None)
        self._worker = outbox.start(self.app)
        return self

    @property
    def url(self) -> str:
        """The base URL it serves on."""
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def port(self) -> int:
        """The port it serves on."""
        assert self._server is not None, "not started"
        return self._server.server_port

    def stop(self) -> None:
        """Stop the worker and the server, and end the watches held (as a console process does at
        shutdown); the database stays."""
        watch.close(self.app)
        self.app.extensions.pop("console_watch", None)
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def close(self) -> None:
        """Stop, and release the database."""
        self.stop()
        with self.app.app_context():
            db.engine.dispose()

    # -- the admin side ----------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """Environment for a `flask --app app …` command on this console's database and keys."""
        return {"CONSOLE_INSTANCE_PATH": str(self.instance)}

    def token(self, name: str, service: str) -> str:
        """A new `service` token for `service`, made with `flask tokens create` as an operator does."""
        return make_token(self.app, name, "service", service)

    def api(self, method: str, path: str, body: Any = None, token: str | None = None,
            **kwargs: Any) -> tuple[int, Any]:
        """One API call as the admin (or `token`): (status, JSON)."""
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        answer = self._api.open(path, method=method, json=body, headers=headers, **kwargs)
        return answer.status_code, answer.get_json(silent=True)

    def change(self, protocol: str, **fields: Any) -> int:
        """Save `fields` of `protocol` through PATCH /api/v1/brokers/<protocol>; the new version."""
        status, body = self.api("PATCH", f"/api/v1/brokers/{protocol}", {**fields, "confirm": True})
        assert status == 200 and body["changed"], (status, body)
        return int(body["version"])

    def upload(self, protocol: str, slot: str, pem: bytes) -> int:
        """Upload a PEM file (tls_ca, tls_cert, tls_key) of `protocol`; the new version."""
        answer = self._api.post(f"/api/v1/brokers/{protocol}/files/{slot}?confirm=true",
                                data={"file": (io.BytesIO(pem), f"{slot}.pem")},
                                headers={"Authorization": f"Bearer {self.admin_token}"},
                                content_type="multipart/form-data")
        assert answer.status_code == 201, answer.get_data(as_text=True)
        return int(answer.get_json()["version"])

    def service(self, name: str) -> dict[str, Any]:
        """GET /api/v1/services/<name> as the admin."""
        status, body = self.api("GET", f"/api/v1/services/{name}")
        assert status == 200, (status, body)
        return body

    def target(self, name: str) -> int:
        """The configuration version `name` should run now."""
        return int(self.service(name)["rollout"]["target"]["version"])

    def wait_ack(self, name: str, version: int, timeout: float = 20) -> dict[str, Any]:
        """The acknowledgement of `version` by `name`, waiting for it; AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            status, body = self.api("GET", f"/api/v1/services/{name}")     # 404 until it registers
            assert status in (200, 404), (status, body)
            state = body.get("rollout") or {} if status == 200 else {"acknowledged": {"version": None}}
            if state["acknowledged"]["version"] == version:
                return state["acknowledged"]
            if time.monotonic() > deadline:
                raise AssertionError(f"no ack of v{version} by {name} within {timeout} s: {state}")
            time.sleep(0.05)

    def signing_secret(self, name: str) -> str | None:
        """The signing secret the console holds for `name` (to forge or check callbacks in tests)."""
        with self.app.app_context():
            row = find_service(name)
            return decrypt(row.signing_secret) if row is not None and row.signing_secret else None

    def config_reads(self, name: str) -> list[Seen]:
        """The configuration requests it answered for `name`."""
        return [r for r in self.requests if r.method == "GET" and r.path == f"/api/v1/services/{name}/config"]

    # -- callbacks sent by hand (forged or repeated ones) -----------------------------------------
    def sign(self, name: str, body: bytes) -> str:
        """The X-Console-Signature of `body` with `name`'s signing secret (computed here, not by the client)."""
        secret = self.signing_secret(name) or ""
        return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()

    def callback(self, name: str, body: bytes | None = None, signature: str | None = None) -> int:
        """POST a change notification to `name`'s registered callback URL; the answer's status."""
        state = self.service(name)
        if body is None:
            target = state["rollout"]["target"]
            body = json.dumps({"service": name, "version": target["version"], "etag": target["etag"]}).encode()
        if signature is None:
            signature = self.sign(name, body)
        request = urllib.request.Request(state["callback_url"], data=body, method="POST",
                                         headers={"Content-Type": "application/json",
                                                  "X-Console-Signature": signature})
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return answer.status
        except urllib.error.HTTPError as exc:
            return exc.code


@pytest.fixture
def console(tmp_path: Path) -> Iterator[LiveConsole]:
    """The real console serving on a free loopback port with its delivery worker."""
    live = LiveConsole(tmp_path / "console").start()
    yield live
    live.close()
