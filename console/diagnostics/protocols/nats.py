"""NATS diagnosis: the handshake is the server's INFO line (read raw; before the TLS upgrade it also says
whether TLS is offered at all); the login is nats-py's CONNECT + PING/PONG with the configured user,
password or token; the operation is a request to a private inbox (subscribe to a unique inbox subject,
publish to it, receive the message).

nats-py needs an event loop, and the thread calling the diagnosis may already run one (Playwright keeps a
loop running in the main thread of the test process): the session runs its coroutines on a private loop
in a helper thread, one connection across the login and the operation, and stops, drains and closes that
loop in `close()`.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import secrets
import ssl
import threading
from typing import Any, Awaitable, TypeVar

from nats.aio.client import Client as NATS

from ...brokers.base import BrokerConfig, Deadline, one_line
from ...brokers.nats import NATS_GREETING, connect_options
from ...brokers.net import classify, ssl_context
from .base import Link, Passed, Session, StepFailed, Wire

T = TypeVar("T")
_CLOSE_WAIT = 0.5


def _line_complete(data: bytes) -> bool:
    return b"\r\n" in data


def parse_info(reply: bytes) -> dict[str, Any]:
    """The JSON object of a NATS `INFO {...}` line ({} when it is not one)."""
    line = reply.split(b"\r\n", 1)[0]
    if not line.startswith(b"INFO "):
        return {}
    try:
        info = json.loads(line[5:])
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


class _LoopThread:
    """A private asyncio loop in a helper thread, for the life of one session."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="console-diagnose-nats", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()

    def run(self, coroutine: Awaitable[T], timeout: float) -> T:
        """The coroutine's result, run on the private loop; StepFailed when `timeout` passes first."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)  # type: ignore[arg-type]
        try:
            return future.result(max(timeout, 0.01))
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise StepFailed("handshake_timeout", "no answer within the time left") from None

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.run(cancel_all(), _CLOSE_WAIT)
        except Exception:  # noqa: BLE001 - best-effort clean-up
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(_CLOSE_WAIT)


class NatsSession(Session):
    """NATS: INFO, CONNECT + PING/PONG with the configured login, request to a private inbox."""

    def __init__(self, config: BrokerConfig) -> None:
        super().__init__(config)
        self.runner: _LoopThread | None = None
        self.nc: NATS | None = None
        self.seen: list[BaseException] = []
        self.info: dict[str, Any] = {}

    @classmethod
    def wire(cls) -> Wire:
        return Wire(NATS_GREETING, _line_complete, server_first=True, starttls=True)

    def check_preamble(self, preamble: bytes) -> None:
        info = parse_info(preamble)
        if info and not (info.get("tls_required") or info.get("tls_available")):
            raise StepFailed("tls_not_offered", f"the server's INFO has neither tls_required nor tls_available "
                                                f"(nats-server {info.get('version', '?')})")

    def describe_handshake(self, reply: bytes) -> str:
        info = self.info = parse_info(reply)
        if not info:
            return "the server answered the NATS greeting"
        self.facts.update(version=info.get("version"), server_name=info.get("server_name"))
        if info.get("tls_required") and not self.config.tls:
            raise StepFailed("tls_required", "the server's INFO says tls_required")
        traits = [name for name, key in (("auth required", "auth_required"), ("TLS required", "tls_required"))
                  if info.get(key)]
        return (f"nats-server {info.get('version', '?')} (server {str(info.get('server_name', '?'))[:12]}…) sent "
                f"INFO{': ' + ', '.join(traits) if traits else ''}")

    def auth(self, deadline: Deadline, link: Link) -> Passed:
        self.facts.update(username=self.config.username, login=self.login_words())
        self.runner = _LoopThread()
        context = ssl_context(self.config) if self.config.tls else None
        outcome = self.runner.run(self._connect(deadline, context), deadline.remaining())
        if isinstance(outcome, BaseException):
            raise self._refusal(outcome)
        assert self.nc is not None
        info = self.nc._server_info or {}
        who = self.login_words()
        if who == "anonymous":
            who = "anonymous (no credentials configured; the server requires none)"
        return Passed(f"CONNECT accepted and PING answered: {who} (server {info.get('version', '?')})")

    async def _connect(self, deadline: Deadline, context: ssl.SSLContext | None) -> BaseException | None:
        async def on_error(exc: Exception) -> None:
            self.seen.append(exc)

        self.nc = nc = NATS()
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        url = f"{'tls' if context else 'nats'}://{host}:{self.config.port}"
        options = connect_options(self.config, deadline.remaining(), on_error, context, url)
        if context is not None and self.config.options.get("tls_server_name"):
            options["tls_hostname"] = str(self.config.options["tls_server_name"])
        try:
            await asyncio.wait_for(nc.connect(**options), max(deadline.remaining(), 0.01))
        except (asyncio.TimeoutError, TimeoutError):
            return TimeoutError("no CONNECT/PONG within the time left")
        except Exception as exc:  # noqa: BLE001 - classified by the caller
            return exc
        return None

    def _refusal(self, exc: BaseException) -> StepFailed:
        candidates = [exc, *reversed(self.seen)]
        for candidate in candidates:
            words = one_line(str(candidate) or repr(candidate))
            if "authorization violation" in words.lower():
                variant = None if (self.config.username or self.config.token) else "no_credentials"
                return StepFailed("auth_failed", words, words="Authorization Violation", variant=variant)
            if isinstance(candidate, (ssl.SSLError, OSError)):
                found = classify(candidate, during_tls=self.config.tls)
                if found is not None:
                    return StepFailed(found.cause, found.message)
        if isinstance(exc, TimeoutError):
            return StepFailed("handshake_timeout", str(exc))
        return StepFailed("unknown", one_line(f"{type(exc).__name__}: {exc}"))

    def operation(self, deadline: Deadline, link: Link) -> Passed:
        assert self.runner is not None
        outcome = self.runner.run(self._request(deadline), deadline.remaining())
        if isinstance(outcome, str):
            return Passed(outcome)
        denied = [e for e in self.seen if "permissions violation" in str(e).lower()]
        if denied:
            words = one_line(denied[-1])
            raise StepFailed("access_denied", words, words=words)
        raise StepFailed("handshake_timeout" if isinstance(outcome, TimeoutError) else "unknown",
                         one_line(f"the inbox request failed: {outcome!r}"))

    async def _request(self, deadline: Deadline) -> str | BaseException:
        nc = self.nc
        assert nc is not None
        inbox = nc.new_inbox()
        payload = secrets.token_hex(8).encode()
        try:
            subscription = await nc.subscribe(inbox)
            await nc.publish(inbox, payload)
            await nc.flush(timeout=max(deadline.remaining(), 0.01))
            message = await subscription.next_msg(timeout=max(deadline.remaining(), 0.01))
            await subscription.unsubscribe()
        except (asyncio.TimeoutError, TimeoutError) as exc:
            return TimeoutError(str(exc) or "no message within the time left")
        except Exception as exc:  # noqa: BLE001 - classified by the caller
            return exc
        if message.data != payload:
            return ValueError("received an unexpected message")
        return f"subscribed to the private inbox {inbox}, published and received the message"

    def identity(self) -> str:
        return f"nats-server {self.facts.get('version', '?')}"

    def close(self) -> None:
        runner, self.runner = self.runner, None
        if runner is None:
            return
        if self.nc is not None:
            try:
                runner.run(self._close(self.nc), _CLOSE_WAIT)
            except Exception:  # noqa: BLE001 - best-effort clean-up
                pass
        runner.close()

    @staticmethod
    async def _close(nc: NATS) -> None:
        if nc.is_connected:
            try:
                await asyncio.wait_for(nc.close(), _CLOSE_WAIT)
            except BaseException:  # noqa: BLE001
                pass
        transport = getattr(nc, "_transport", None)
        for name in ("_io_writer", "_bare_io_writer"):
            writer = getattr(transport, name, None)
            if writer is not None:
                writer.transport.abort()
        await asyncio.sleep(0)
