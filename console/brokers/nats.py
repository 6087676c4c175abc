"""NATS checker (nats-py): connect (INFO, CONNECT, PING/PONG), one more PING/PONG for the round-trip
time, close.

Connection string: `nats://host:4222`, `tls://host:4222` when TLS is on (built from `host`/`port`).

Options honoured: `tls`, `tls_ca_file` (else the system store), `tls_cert_file`/`tls_key_file`,
`tls_verify_hostname`, `username`/`password`, `token`, `options["name"]` (connection name, default
`messaging-console`).

Identity: `server_name`, `server_id`, `version`, `cluster` (when clustered), `rtt_ms`, `tls`.

Traps handled:
- `max_reconnect_attempts=0` means "retry forever" in nats-py: it is 1 here, with `allow_reconnect=False`
  and no reconnect wait, and the whole connect is wrapped in `asyncio.wait_for` with the deadline;
- with `tls=` set, nats-py silently stays in plaintext against a server without TLS: the server's INFO
  (`tls_required`) is checked and the check reports `tls_not_offered`;
- without `tls=`, nats-py upgrades to TLS on its own (system store) when the server requires it: a TLS
  failure then means `tls_required`;
- the failed attempt's real error only reaches `error_cb` (`NoServersError` is raised): it is collected;
- the check runs on its own event loop (in a helper thread when the caller's thread already runs one),
  and every task, transport and the loop itself are closed before it returns.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from typing import Any, Awaitable, Callable, TypeVar

from nats.aio.client import Client as NATS
from nats import errors as nerr

from .base import BrokerConfig, CheckFailed, Deadline, DriverChecker, one_line
from .net import Greeting, classify, diagnose, ssl_context

NATS_GREETING = Greeting("NATS", b"CONNECT {}\r\nPING\r\n", lambda reply: reply.startswith(b"INFO "))
T = TypeVar("T")


def run_async(factory: Callable[[], Awaitable[T]], timeout: float) -> T:
    """Run the coroutine made by `factory` on a private event loop; in a helper thread when this thread
    already runs a loop (that thread is joined for at most `timeout`)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(factory())
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller
            box["error"] = exc

    worker = threading.Thread(target=target, name="nats-check", daemon=True)
    worker.start()
    worker.join(timeout)
    if "error" in box:
        raise box["error"]
    if "value" not in box:
        raise CheckFailed("unknown", "the NATS check did not finish in time")
    return box["value"]


def _abort(nc: NATS) -> None:
    transport = nc._transport
    for writer in (getattr(transport, "_io_writer", None), getattr(transport, "_bare_io_writer", None)):
        if writer is not None:
            writer.transport.abort()


class _QuietSslEof(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received()" not in record.getMessage()


_QUIET_SSL_EOF = _QuietSslEof()


def _url(config: BrokerConfig) -> str:
    host = f"[{config.host}]" if ":" in config.host else config.host
    return f"{'tls' if config.tls else 'nats'}://{host}:{config.port}"


class NatsChecker(DriverChecker):
    """Checks a NATS server with nats-py: connect, PING/PONG, close."""

    protocol = "nats"
    default_port = 4222

    def probe(self, config: BrokerConfig, deadline: Deadline) -> dict[str, Any]:
        """Connect and measure one round trip within `deadline`; the server's identity."""
        library = deadline.share(self.library_share)
        context = ssl_context(config) if config.tls else None
        outcome = run_async(lambda: self._session(config, library, context), deadline.remaining() + 0.05)
        if "identity" in outcome:
            return outcome["identity"]
        raise self._classify(config, deadline, outcome)

    async def _session(self, config: BrokerConfig, library: Deadline,
                       context: ssl.SSLContext | None) -> dict[str, Any]:
        seen: list[BaseException] = []

        async def on_error(exc: Exception) -> None:
            seen.append(exc)

        nc = NATS()
        options = connect_options(config, library.remaining(), on_error, context, _url(config))
        try:
            await asyncio.wait_for(nc.connect(**options), max(library.remaining(), 0.01))
            info = dict(nc._server_info)
            if config.tls and not info.get("tls_required"):
                return {"not_tls": info}
            rtt = await asyncio.wait_for(nc.rtt(), max(library.remaining(), 0.01))
            library.done()
            identity = {"server_name": info.get("server_name", ""), "server_id": info.get("server_id", ""),
                        "version": info.get("version", ""), "rtt_ms": round(rtt * 1000, 3),
                        "tls": bool(info.get("tls_required"))}
            if info.get("cluster"):
                identity["cluster"] = info["cluster"]
            return {"identity": identity}
        except (asyncio.TimeoutError, TimeoutError) as exc:
            return {"timeout": exc, "seen": seen}
        except Exception as exc:  # noqa: BLE001 - classified by the caller
            return {"error": exc, "seen": seen}
        finally:
            if nc.is_connected:
                try:
                    await asyncio.wait_for(nc.close(), max(min(library.remaining(), 0.5), 0.1))
                except BaseException:  # noqa: BLE001 - best-effort clean-up
                    pass
            _abort(nc)
            await asyncio.sleep(0)

    def _classify(self, config: BrokerConfig, deadline: Deadline, outcome: dict[str, Any]) -> CheckFailed:
        host, port = config.host, config.port
        where = f"{host}:{port}"
        if "not_tls" in outcome:
            version = outcome["not_tls"].get("version", "?")
            return CheckFailed("tls_not_offered", f"{where} answered in plaintext: its INFO has no "
                                                  f"tls_required (nats-server {version})")
        if "timeout" in outcome:
            fallback = CheckFailed("handshake_timeout", f"{where}: no NATS INFO/PONG within the timeout")
            return diagnose(config, host, port, deadline, NATS_GREETING, fallback)
        exc: BaseException = outcome["error"]
        seen: list[BaseException] = outcome["seen"]
        candidates = [exc] + [e for e in reversed(seen) if e is not exc]
        for candidate in candidates:
            if isinstance(candidate, (ssl.SSLError, ssl.CertificateError)) and not config.tls:
                return CheckFailed("tls_required", f"{where} requires TLS but the settings ask for "
                                                   f"plaintext (nats-py's own TLS upgrade failed: "
                                                   f"{one_line(candidate)})")
            found = classify(candidate, during_tls=config.tls, where=where)
            if found is not None:
                if found.cause in ("connect_timeout", "handshake_timeout"):
                    return diagnose(config, host, port, deadline, NATS_GREETING, found)
                return found
        words = one_line(str(exc) or repr(exc))
        lowered = words.lower()
        if "authorization violation" in lowered or "authentication" in lowered:
            return CheckFailed("auth_failed", f"{where}: {words}")
        if "permissions violation" in lowered:
            return CheckFailed("access_denied", f"{where}: {words}")
        if isinstance(exc, (nerr.NoServersError, nerr.Error)) or "info" in lowered:
            fallback = CheckFailed("unknown", f"{where}: {words}")
            return diagnose(config, host, port, deadline, NATS_GREETING, fallback)
        return CheckFailed("unknown", f"{where}: {words}")


def connect_options(config: BrokerConfig, budget: float, on_error: Callable[[Exception], Awaitable[None]],
                    context: ssl.SSLContext | None, url: str) -> dict[str, Any]:
    """nats-py connect options for one attempt within `budget` seconds: no reconnects (0 would mean
    forever), the configured credentials, token and TLS context."""
    logging.getLogger("asyncio").addFilter(_QUIET_SSL_EOF)   # once: the same filter object
    options: dict[str, Any] = {
        "servers": [url], "connect_timeout": max(budget, 0.05),
        "allow_reconnect": False, "max_reconnect_attempts": 1, "reconnect_time_wait": 0,
        "error_cb": on_error, "name": str(config.options.get("name") or "messaging-console"),
        "ping_interval": 3600, "dont_randomize": True, "verbose": False, "pedantic": False,
    }
    if context is not None:
        options["tls"] = context
    if config.username:
        options["user"], options["password"] = config.username, config.password or ""
    if config.token:
        options["token"] = config.token
    return options
