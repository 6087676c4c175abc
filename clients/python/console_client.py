"""Messaging Console client for extension services: standard library only, one file.

    client = ConsoleClient("http://console:8000", token, "edge")
    server = CallbackServer("0.0.0.0", 8090, client.signing_secret_getter, client.notify)
    server.start()
    client.register(["mqtt", "rabbitmq"], callback_url="http://edge-host:8090/console-callback")
    client.watch(apply)            # apply(config) connects with config.settings, then client.ack(...)

`fetch()` sends `If-None-Match` with the last ETag and answers None on `304`; `watch()` fetches at start,
after every signed callback, and every `poll_interval` seconds when no callback comes (a lost callback
or a service without a reachable callback URL still converges). Errors raise `ConsoleError` with the
HTTP status and the console's own message; a console that cannot be reached raises `ConsoleUnavailable`.
"""
from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import queue
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping

__all__ = ["CallbackServer", "Config", "ConsoleClient", "ConsoleError", "ConsoleUnavailable",
           "Notification", "SIGNATURE_HEADER", "sign", "verify_signature"]

SIGNATURE_HEADER = "X-Console-Signature"
SIGNATURE_PREFIX = "sha256="
CALLBACK_PATH = "/console-callback"
MAX_CALLBACK_BYTES = 64 * 1024
USER_AGENT = "messaging-console-client/1"

log = logging.getLogger("console_client")


class ConsoleError(Exception):
    """The console answered with an error: `status` (HTTP code), `error` (its code) and `message`."""

    def __init__(self, status: int | None, message: str, error: str = "",
                 body: Mapping[str, Any] | None = None) -> None:
        self.status = status
        self.error = error
        self.message = message
        self.body: dict[str, Any] = dict(body or {})
        prefix = f"HTTP {status}" if status is not None else "console unreachable"
        super().__init__(f"{prefix}: {message}" + (f" ({error})" if error else ""))


class ConsoleUnavailable(ConsoleError):
    """The console could not be reached (connection refused, timeout, DNS failure)."""


@dataclass(frozen=True)
class Config:
    """One configuration document of `GET /api/v1/services/<name>/config`."""

    service: str
    version: int
    etag: str
    priorities: list[str]
    protocol: str | None
    brokers: dict[str, dict[str, Any]]
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_document(cls, document: Mapping[str, Any], etag: str = "") -> Config:
        """A Config from the JSON document; ConsoleError when it is not one."""
        try:
            version = document["version"]
            if not isinstance(version, int) or isinstance(version, bool):
                raise TypeError("version is not an integer")
            brokers = document.get("brokers") or {}
            if not isinstance(brokers, dict):
                raise TypeError("brokers is not an object")
            protocol = document.get("protocol")
            if protocol is not None and not isinstance(protocol, str):
                raise TypeError("protocol is not a string")
            return cls(service=str(document["service"]), version=version,
                       etag=etag or str(document.get("etag") or ""),
                       priorities=list(document.get("priorities") or []), protocol=protocol,
                       brokers={str(k): dict(v) for k, v in brokers.items()}, raw=dict(document))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConsoleError(200, f"the console sent a configuration this client cannot read: {exc}",
                               "bad_document") from None

    @property
    def settings(self) -> dict[str, Any] | None:
        """The settings of the chosen protocol, or None when the console chose none."""
        return self.brokers.get(self.protocol) if self.protocol else None


@dataclass(frozen=True)
class Notification:
    """One verified callback: the console says `service` should now run `version` (`etag`)."""

    service: str
    version: int
    etag: str


def sign(secret: str, body: bytes) -> str:
    """The `X-Console-Signature` value for `body`: `sha256=<hex HMAC-SHA256 keyed with secret>`."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def verify_signature(secret: str | None, body: bytes, header: str | None) -> bool:
    """True when `header` is the signature of exactly `body` with `secret` (constant-time compare)."""
    if not secret or not header:
        return False
    header = header.strip()
    if not header.lower().startswith(SIGNATURE_PREFIX):
        return False
    given = header[len(SIGNATURE_PREFIX):].strip().lower()
    return hmac.compare_digest(sign(secret, body)[len(SIGNATURE_PREFIX):], given)


def parse_notification(body: bytes, expected_service: str | None = None) -> Notification:
    """The Notification in a callback body; ValueError naming what is wrong."""
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError("the body is not JSON") from None
    if not isinstance(document, dict):
        raise ValueError("the body is not a JSON object")
    service, version, etag = document.get("service"), document.get("version"), document.get("etag")
    if not isinstance(service, str) or not service:
        raise ValueError("'service' must be a non-empty string")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ValueError("'version' must be a non-negative integer")
    if not isinstance(etag, str):
        raise ValueError("'etag' must be a string")
    if expected_service is not None and service != expected_service:
        raise ValueError(f"the callback is for service {service!r}, this is {expected_service!r}")
    return Notification(service, version, etag)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: the token must not travel to another address."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102 - urllib hook
        return None


class ConsoleClient:
    """Talks to one console as one service: register, fetch (ETag), acknowledge, watch."""

    def __init__(self, base_url: str, token: str, service: str, timeout: float = 5) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"the console URL must be http(s)://host[:port], not {base_url!r}")
        if not token:
            raise ValueError("a service token is required")
        if not service:
            raise ValueError("a service name is required")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.service = service
        self.timeout = timeout
        self.signing_secret: str | None = None
        self.etag: str | None = None
        self._etag_header: str | None = None
        self.config: Config | None = None
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._wake: queue.Queue[Notification | None] = queue.Queue()

    # -- HTTP -----------------------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return self.base_url + path

    def _service_path(self, suffix: str) -> str:
        return f"/api/v1/services/{urllib.parse.quote(self.service, safe='')}{suffix}"

    def request(self, method: str, path: str, body: Any = None,
                headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        """One API call: (status, headers, decoded JSON or None); ConsoleError on any non-2xx but 304."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self._url(path), data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        request.add_header("User-Agent", USER_AGENT)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with self._opener.open(request, timeout=self.timeout) as answer:
                return answer.status, dict(answer.headers.items()), _decode(answer.read())
        except urllib.error.HTTPError as exc:
            payload = exc.read() if exc.fp is not None else b""
            if exc.code == HTTPStatus.NOT_MODIFIED:
                return exc.code, dict(exc.headers.items()), None
            raise _error(exc.code, payload, exc.headers.get("Location")) from None
        except urllib.error.URLError as exc:
            raise ConsoleUnavailable(None, f"{self.base_url}: {exc.reason}", "unreachable") from None
        except (OSError, http.client.HTTPException) as exc:
            raise ConsoleUnavailable(None, f"{self.base_url}: {exc}", "unreachable") from None

    # -- API ------------------------------------------------------------------------------------------
    def register(self, protocols: list[str], callback_url: str | None = None) -> dict[str, Any]:
        """Register (or update) this service; keeps the signing secret a callback URL brings. Without
        a callback URL, `callback_url: null` turns off the callbacks of an earlier registration (the
        console keeps a registered URL when the field is left out)."""
        body: dict[str, Any] = {"name": self.service, "protocols": list(protocols),
                                "callback_url": callback_url or None}
        _status, _headers, document = self.request("POST", "/api/v1/services", body)
        document = document if isinstance(document, dict) else {}
        secret = document.get("signing_secret")
        if callback_url and not secret:
            raise ConsoleError(_status, "the console registered the callback URL but sent no signing "
                                        "secret", "no_secret", document)
        if secret:
            self.signing_secret = str(secret)
        elif not callback_url:
            self.signing_secret = None
        return document

    def fetch(self, force: bool = False) -> Config | None:
        """The configuration when it changed since the last fetch (`If-None-Match`), else None (304)."""
        headers = {}
        if self.etag and not force:
            headers["If-None-Match"] = self._etag_header or _quote_etag(self.etag)
        status, answer_headers, document = self.request("GET", self._service_path("/config"), headers=headers)
        if status == HTTPStatus.NOT_MODIFIED:
            return None
        if not isinstance(document, dict):
            raise ConsoleError(status, "the console's configuration answer is not a JSON object", "bad_document")
        header = (_header(answer_headers, "ETag") or "").strip()
        etag = _unquote_etag(header) or str(document.get("etag") or "")
        config = Config.from_document(document, etag)
        self.etag = etag or config.etag or None
        self._etag_header = header or None
        self.config = config
        return config

    def ack(self, version: int, status: str, message: str = "") -> dict[str, Any]:
        """Report what this service runs now: `applied` or `failed` for `version`, with a message."""
        if status not in ("applied", "failed"):
            raise ValueError("status must be 'applied' or 'failed'")
        body = {"version": int(version), "status": status, "message": message}
        _status, _headers, document = self.request("POST", self._service_path("/ack"), body)
        return document if isinstance(document, dict) else {}

    def verify_signature(self, body: bytes, header: str | None) -> bool:
        """True when `header` signs `body` with this service's current signing secret."""
        return verify_signature(self.signing_secret, body, header)

    def signing_secret_getter(self) -> str | None:
        """The current signing secret (a `CallbackServer` secret_getter)."""
        return self.signing_secret

    # -- waiting for changes --------------------------------------------------------------------------
    def notify(self, notification: Notification | None = None) -> None:
        """Wake `watch()`: a verified callback arrived (a `CallbackServer` on_change)."""
        self._wake.put(notification)

    def wake(self) -> None:
        """Wake `watch()` without a notification (it then checks its stop event and polls)."""
        self._wake.put(None)

    def watch(self, on_config: Callable[[Config], None], poll_interval: float = 30,
              stop: threading.Event | None = None, retry_max: float | None = None) -> None:
        """Call `on_config` with the configuration now and on every change until `stop` is set.

        A change is noticed by a callback (`notify`) or, when none comes, by polling every
        `poll_interval` seconds with the ETag; a console that cannot be reached (or answers 5xx, 404) is
        retried with a backoff of 1, 2, 4 … seconds up to `retry_max` (default: `poll_interval`); a
        refused token (401, 403) raises its ConsoleError. `on_config` runs in this thread, one
        configuration at a time; an exception in it is logged and watching goes on.
        """
        stop = stop or threading.Event()
        retry_max = poll_interval if retry_max is None else retry_max
        failures = 0
        wait = 0.0
        while not stop.is_set():
            notification = self._next(wait, stop)
            if stop.is_set():
                return
            if notification is not None and self.config is not None and notification.etag \
                    and notification.etag == self.etag:
                wait = poll_interval
                continue
            try:
                config = self.fetch()
            except ConsoleError as exc:
                if exc.status in (401, 403):
                    raise
                failures += 1
                wait = max(min(2 ** (failures - 1), retry_max), 0.05)
                log.warning("fetching the configuration failed (%s); retrying in %.0f s", exc, wait)
                continue
            failures = 0
            wait = poll_interval
            if config is None:
                continue
            try:
                on_config(config)
            except Exception:  # noqa: BLE001 - the watcher outlives one bad apply
                log.exception("on_config failed for version %s", config.version)

    def _next(self, wait: float, stop: threading.Event) -> Notification | None:
        """The next notification within `wait` seconds (None on timeout); drains duplicates."""
        notification: Notification | None = None
        if wait > 0:
            try:
                notification = self._wake.get(timeout=wait)
            except queue.Empty:
                return None
        while True:
            try:
                newer = self._wake.get_nowait()
            except queue.Empty:
                return notification
            if newer is not None and (notification is None or newer.version >= notification.version):
                notification = newer


class CallbackServer:
    """Receives the console's signed callbacks on `path` in a background thread.

    A request with a bad or missing signature gets `401`, a body that is not the expected JSON `400`;
    a good one `204` at once, and `on_change(notification)` runs afterwards in a worker thread, one at a
    time, so the console is never kept waiting. `get_routes` maps extra GET paths to functions that
    return a JSON-serialisable value (a service's `/status`, for instance). `port` 0 picks a free port.
    """

    def __init__(self, host: str, port: int, secret_getter: Callable[[], str | None],
                 on_change: Callable[[Notification], None], path: str = CALLBACK_PATH,
                 expected_service: str | None = None,
                 get_routes: Mapping[str, Callable[[], Any]] | None = None) -> None:
        self.secret_getter = secret_getter
        self.on_change = on_change
        self.path = path
        self.expected_service = expected_service
        self.get_routes: dict[str, Callable[[], Any]] = dict(get_routes or {})
        self.received = 0
        self.rejected = 0
        self._queue: queue.Queue[Notification | None] = queue.Queue()
        server_class = _IPv6Server if ":" in host else ThreadingHTTPServer
        self._httpd = server_class((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._threads: list[threading.Thread] = []

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        """The port the server listens on (the chosen one when 0 was given)."""
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The callback URL on the listening address (register a reachable one when behind NAT)."""
        host = self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}{self.path}"

    def start(self) -> CallbackServer:
        """Serve in background threads; returns self."""
        serve = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                 name="console-callback-http", daemon=True)
        work = threading.Thread(target=self._work, name="console-callback-worker", daemon=True)
        self._threads = [serve, work]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and let the worker finish the callback it runs."""
        if self._threads:
            self._httpd.shutdown()
        self._httpd.server_close()
        self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> CallbackServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _work(self) -> None:
        while True:
            notification = self._queue.get()
            if notification is None:
                return
            try:
                self.on_change(notification)
            except Exception:  # noqa: BLE001 - one failing handler must not stop the worker
                log.exception("on_change failed for version %s", notification.version)

    def _accept(self, body: bytes, signature: str | None) -> tuple[int, str]:
        """The answer to one callback: (HTTP status, reason); queues it when good."""
        if not verify_signature(self.secret_getter(), body, signature):
            self.rejected += 1
            return HTTPStatus.UNAUTHORIZED, "bad or missing signature"
        try:
            notification = parse_notification(body, self.expected_service)
        except ValueError as exc:
            self.rejected += 1
            return HTTPStatus.BAD_REQUEST, str(exc)
        self.received += 1
        self._queue.put(notification)
        return HTTPStatus.NO_CONTENT, ""

    def _handler_class(self) -> type:
        server = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "console-callback/1"
            protocol_version = "HTTP/1.1"
            timeout = 10                    # seconds a client may take per read: no slow-loris hang

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                log.debug("%s %s", self.address_string(), format % args)

            def _send(self, status: int, payload: Any = None) -> None:
                data = b"" if payload is None else json.dumps(payload).encode("utf-8")
                self.send_response(status)
                if data:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if data and self.command != "HEAD":
                    self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - stdlib hook
                if self.path.split("?", 1)[0] != server.path:
                    self._send(HTTPStatus.NOT_FOUND, {"error": "not_found"})
                    return
                try:
                    length = int(self.headers.get("Content-Length") or "")
                except ValueError:
                    self.close_connection = True
                    self._send(HTTPStatus.LENGTH_REQUIRED, {"error": "a Content-Length is required"})
                    return
                if length < 0 or length > MAX_CALLBACK_BYTES:
                    self.close_connection = True
                    self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "the body is too large"})
                    return
                body = self.rfile.read(length)
                status, reason = server._accept(body, self.headers.get(SIGNATURE_HEADER))
                self._send(status, {"error": reason} if reason else None)

            def do_GET(self) -> None:  # noqa: N802 - stdlib hook
                route = server.get_routes.get(self.path.split("?", 1)[0])
                if route is None:
                    self._send(HTTPStatus.NOT_FOUND, {"error": "not_found"})
                    return
                try:
                    payload = route()
                except Exception:  # noqa: BLE001 - answer 500, keep serving
                    log.exception("GET %s failed", self.path)
                    self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal_error"})
                    return
                self._send(HTTPStatus.OK, payload)

        return Handler


class _IPv6Server(ThreadingHTTPServer):
    """The threading HTTP server on an IPv6 address."""

    address_family = socket.AF_INET6


def _decode(payload: bytes) -> Any:
    if not payload:
        return None
    try:
        return json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _error(status: int, payload: bytes, location: str | None = None) -> ConsoleError:
    """A ConsoleError carrying the console's `error` and `message` when the body is its JSON."""
    document = _decode(payload)
    if isinstance(document, dict):
        message = str(document.get("message") or document.get("error") or HTTPStatus(status).phrase)
        errors = document.get("errors")
        if isinstance(errors, dict) and errors:
            message += " " + "; ".join(f"{k}: {v}" for k, v in errors.items())
        return ConsoleError(status, message, str(document.get("error") or ""), document)
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    if 300 <= status < 400:
        phrase += f" to {location} (redirects are not followed: check the console URL)"
    text = payload.decode("utf-8", "replace").strip().splitlines()
    detail = f": {text[0][:200]}" if text and not text[0].lstrip().startswith("<") else ""
    return ConsoleError(status, phrase + detail)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def _quote_etag(etag: str) -> str:
    return etag if etag.startswith(('"', 'W/"')) else f'"{etag}"'


def _unquote_etag(value: str) -> str:
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value

