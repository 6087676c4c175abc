"""A real HTTP callback receiver on 127.0.0.1 for the delivery tests: records every POST, checks its
signature against the secret it is given, and can go down and come back on the same port."""
from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """Callbacks received: [{"path", "body", "json", "signature", "valid"}]."""

    def __init__(self, port: int | None = None, status: int = 204) -> None:
        self.port = port or free_port()
        self.status = status
        self.secrets: dict[str, str] = {}          # service → signing secret
        self.calls: list[dict[str, Any]] = []
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()
        self._event = threading.Condition(self._lock)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> Receiver:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    data = json.loads(body)
                except ValueError:
                    data = None
                header = self.headers.get("X-Console-Signature", "")
                secret = outer.secrets.get((data or {}).get("service", ""), "")
                expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
                with outer._lock:
                    outer.calls.append({"path": self.path, "body": body, "json": data,
                                        "signature": header,
                                        "valid": bool(secret) and hmac.compare_digest(header, expected)})
                    outer._event.notify_all()
                self.send_response(outer.status)
                if outer.status in (301, 302, 307):
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least `count` callbacks arrived; all calls so far."""
        with self._lock:
            self._event.wait_for(lambda: len(self.calls) >= count, timeout)
            return list(self.calls)
