"""The console's HTTP API as the agent uses it: register, fetch/watch the document, acknowledge.
Redirects are never followed (the token stays with the console)."""
from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class Unavailable(Exception):
    """The console cannot be reached or answered 5xx: retry later."""


class Refused(Exception):
    """The console answered and refused (4xx): the token, the service name or the request is wrong."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


class Console:
    """One service talking to one console with its service token."""

    def __init__(self, url: str, token: str, service: str, timeout: float = 10.0) -> None:
        self.url, self.token, self.service, self.timeout = url.rstrip("/"), token, service, timeout
        self.held = False      # whether the last watch was really held by the console
        self.asked: str | None = None   # a diagnosis the console asks for (its Console-Diagnose header)
        self.seen: str | None = None    # the last one this agent ran (so the console holds the watch)

    def _call(self, method: str, path: str, body: Any = None, headers: dict | None = None,
              timeout: float | None = None) -> tuple[int, Any, dict]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Accept": "application/json",
            "User-Agent": "console-agent", **({"Content-Type": "application/json"} if data else {}),
            **(headers or {})})
        try:
            with _OPENER.open(request, timeout=timeout or self.timeout) as answer:
                raw = answer.read()
                return answer.status, json.loads(raw) if raw else None, dict(answer.headers)
        except urllib.error.HTTPError as exc:
            if exc.code == 304:
                return 304, None, dict(exc.headers or {})
            raw = exc.read() or b""
            try:
                text = json.loads(raw).get("message") or raw.decode(errors="replace")
            except (ValueError, AttributeError):
                text = raw.decode(errors="replace")[:200]
            if exc.code >= 500 or exc.code == 429:      # 429: it holds as many watches as it can
                raise Unavailable(f"the console answered {exc.code}") from None
            raise Refused(exc.code, str(text).strip()[:300]) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unavailable(f"the console at {self.url} cannot be reached: {reason}") from None

    def register(self, protocols: list[str]) -> None:
        """Register (or update) the service, without a callback: the agent watches instead."""
        self._call("POST", "/api/v1/services", {"name": self.service, "protocols": protocols,
                                                "callback_url": None})

    def fetch(self, etag: str | None, wait: float = 0) -> dict | None:
        """The service's document, or None when `etag` is still current (`304`). With `wait` the
        console holds the request until the document changes or the wait ends."""
        path = f"/api/v1/services/{urllib.parse.quote(self.service)}/config"
        if wait and etag:
            path += f"?wait={int(wait)}"
        started = time.monotonic()
        headers = {"If-None-Match": f'"{etag}"'} if etag else {}
        if self.seen:
            headers["Console-Diagnose-Seen"] = self.seen
        status, body, answered = self._call("GET", path, headers=headers,
                                            timeout=self.timeout + (wait * 1.1 if wait and etag else 0))
        self.asked = next((v for k, v in answered.items() if k.lower() == "console-diagnose"), None)
        self.held = time.monotonic() - started >= min(wait / 2, 1.0) if wait and etag else False
        if status == 304:
            return None
        if not isinstance(body, dict) or "version" not in body or "brokers" not in body:
            raise Unavailable("the console's answer is not a configuration document")
        return body

    def ack(self, version: int, status: str, message: str = "",
            diagnosis: dict | None = None) -> None:
        """Say what the service runs now."""
        body: dict[str, Any] = {"version": version, "status": status, "message": message[:2000]}
        if diagnosis is not None:
            body["diagnosis"] = diagnosis
        self._call("POST", f"/api/v1/services/{urllib.parse.quote(self.service)}/ack", body)


    def diagnosis(self, request: str, steps: dict) -> None:
        """Send the network steps run for the diagnosis `request` the console asked for."""
        self._call("POST", f"/api/v1/services/{urllib.parse.quote(self.service)}/diagnosis",
                   {"request": request, "diagnosis": steps})


class Backoff:
    """Exponential backoff with full jitter: 0.5 s, 1 s, 2 s … up to `cap`, each a random share."""

    def __init__(self, base: float = 0.5, cap: float = 30.0) -> None:
        self.base, self.cap, self.failures = base, cap, 0

    def next(self) -> float:
        self.failures += 1
        return random.uniform(self.base / 2, min(self.cap, self.base * 2 ** (self.failures - 1)))

    def reset(self) -> None:
        self.failures = 0
