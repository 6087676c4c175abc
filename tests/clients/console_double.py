"""A small stand-in for the console's service API on a real local http.server, for the client's and the
example service's protocol-level tests: registration with a signing secret, the configuration with an
ETag and 304, acknowledgements, and signed callbacks. It follows CONTRACT.md § Configuration delivery
and is written independently of clients/python (its own HMAC), so the two check each other. The real
console is covered by the end-to-end tests of the delivery feature."""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    """One request the double answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int = 0


@dataclass
class ConsoleDouble:
    """The service API of one console for the services whose tokens are in `tokens` (token → service)."""

    tokens: dict[str, str]
    host: str = "127.0.0.1"
    port: int = 0
    version: int = 1
    protocol: str | None = None
    brokers: dict[str, dict[str, Any]] = field(default_factory=dict)
    priorities: list[str] = field(default_factory=lambda: ["mqtt", "rabbitmq"])
    requests: list[Seen] = field(default_factory=list)
    acks: list[dict[str, Any]] = field(default_factory=list)
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    fail_next: list[tuple[int, bytes, dict[str, str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self.ack_event = threading.Condition(self.lock)
        self.httpd = ThreadingHTTPServer((self.host, self.port), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                       daemon=True)

    @property
    def url(self) -> str:
        """The base URL."""
        return f"http://{self.host}:{self.httpd.server_address[1]}"

    def start(self) -> "ConsoleDouble":
        """Serve in a thread."""
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- state -----------------------------------------------------------------------------------
    def document(self, service: str) -> dict[str, Any]:
        """The configuration document of `service` (without the etag)."""
        return {"service": service, "version": self.version, "priorities": list(self.priorities),
                "protocol": self.protocol, "brokers": json.loads(json.dumps(self.brokers))}

    def etag(self, service: str) -> str:
        """The ETag of `service`'s document: a hash of its content."""
        canonical = json.dumps(self.document(service), sort_keys=True).encode()
        return hashlib.sha256(canonical).hexdigest()[:32]

    def change(self, protocol: str | None, brokers: dict[str, dict[str, Any]]) -> int:
        """A committed change: new settings, the next version."""
        with self.lock:
            self.protocol, self.brokers = protocol, brokers
            self.version += 1
            return self.version

    def config_reads(self, service: str) -> list[Seen]:
        """The configuration requests seen for `service`."""
        return [r for r in self.requests if r.method == "GET" and r.path == f"/api/v1/services/{service}/config"]

    def wait_ack(self, version: int, timeout: float = 20) -> dict[str, Any]:
        """The acknowledgement of `version`, waiting for it; AssertionError after `timeout`."""
        with self.ack_event:
            found = self.ack_event.wait_for(
                lambda: any(a["version"] == version for a in self.acks), timeout=timeout)
            assert found, f"no ack of v{version} within {timeout} s; acks: {self.acks}"
            return [a for a in self.acks if a["version"] == version][-1]

    # -- callbacks -------------------------------------------------------------------------------
    def signature(self, service: str, body: bytes) -> str:
        """The X-Console-Signature header of `body` for `service`."""
        key = self.secrets[service].encode("utf-8")
        return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()

    def callback(self, service: str, body: bytes | None = None, signature: str | None = None,
                 timeout: float = 5) -> int:
        """POST the change notification to `service`'s callback URL as the console does; the status."""
        if body is None:
            body = json.dumps({"service": service, "version": self.version, "etag": self.etag(service)}).encode()
        if signature is None:
            signature = self.signature(service, body)
        request = urllib.request.Request(self.services[service]["callback_url"], data=body, method="POST",
                                         headers={"Content-Type": "application/json",
                                                  "X-Console-Signature": signature})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return answer.status
        except urllib.error.HTTPError as exc:
            return exc.code

    # -- HTTP ------------------------------------------------------------------------------------
    def _answer(self, method: str, path: str, headers: dict[str, str],
                raw: bytes) -> tuple[int, bytes, dict[str, str]]:
        if self.fail_next:
            return self.fail_next.pop(0)
        auth = headers.get("authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
        service = self.tokens.get(token)
        if service is None:
            return _json(401, {"error": "unauthorized", "message": "A valid API token is required."})
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return _json(400, {"error": "bad_request", "message": "The body is not JSON."})
        if method == "POST" and path == "/api/v1/services":
            if not isinstance(body, dict) or body.get("name") != service:
                return _json(403, {"error": "forbidden", "message": "This token belongs to another service."})
            record = {"name": service, "protocols": body.get("protocols", []),
                      "callback_url": body.get("callback_url")}
            created = service not in self.services
            self.services[service] = record
            answer: dict[str, Any] = {"service": record}
            if record["callback_url"]:
                self.secrets[service] = secrets.token_hex(32)
                answer["signing_secret"] = self.secrets[service]
            return _json(201 if created else 200, answer)
        parts = path.strip("/").split("/")
        if len(parts) == 5 and parts[:3] == ["api", "v1", "services"]:
            name, what = parts[3], parts[4]
            if name != service:
                return _json(403, {"error": "forbidden", "message": "This token belongs to another service."})
            if what == "config" and method == "GET":
                etag = self.etag(service)
                if headers.get("if-none-match") == f'"{etag}"':
                    return 304, b"", {"ETag": f'"{etag}"'}
                status, payload, extra = _json(200, {**self.document(service), "etag": etag})
                return status, payload, {**extra, "ETag": f'"{etag}"'}
            if what == "ack" and method == "POST":
                if not isinstance(body, dict) or body.get("status") not in ("applied", "failed"):
                    return _json(400, {"error": "invalid", "message": "status must be applied or failed",
                                       "errors": {"status": "must be applied or failed"}})
                with self.ack_event:
                    self.acks.append(body)
                    self.ack_event.notify_all()
                return _json(200, {"ok": True})
        return _json(404, {"error": "not_found", "message": "No such resource."})

    def _handler(self) -> type:
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                with double.lock:
                    status, payload, extra = double._answer(self.command, self.path, headers, raw)
                    try:
                        body = json.loads(raw) if raw else None
                    except ValueError:
                        body = raw
                    double.requests.append(Seen(self.command, self.path, headers, body, status))
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _serve

        return Handler


def _json(status: int, document: dict[str, Any]) -> tuple[int, bytes, dict[str, str]]:
    return status, json.dumps(document).encode(), {"Content-Type": "application/json"}
