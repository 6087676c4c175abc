"""NATS driver (nats-py).

Check: connect (INFO, CONNECT, PING/PONG), one more PING/PONG for the round-trip time, close. Diagnosis:
the handshake is the server's INFO line (read raw; before the TLS upgrade it also says whether TLS is
offered at all) and whatever the server sends next on its own (`-ERR 'maximum connections exceeded'`
right after INFO is `connection_limit`; after the TLS upgrade, a TLS 1.3 server's alert refusing the
client certificate), with nothing sent, so that no probe leaves an authorization error in the server's
log; the login is nats-py's CONNECT + PING/PONG with the configured
user, password or token; the operation is a request to a private inbox (subscribe to a unique inbox
subject, publish to it, receive the message; a `Permissions Violation` is `access_denied` at once). One
classifier (`NatsDriver.classify`) names nats-py's errors for both.

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
- a server at its `max_connections` sends INFO and `-ERR 'maximum connections exceeded'` and closes, and
  nats-py only says "Connection lost": the first lines the server sends are read raw (`server_refusal`);
- nats-server answers a refused client certificate with the alert `BAD_CERTIFICATE` whether or not one
  was sent, and nats-py often reports only a lost connection: the configuration tells required from
  rejected, and a lost TLS connection is probed with a handshake that waits for the alert;
- the check runs on its own event loop (in a helper thread when the caller's thread already runs one),
  and every task, transport and the loop itself are closed before it returns; the diagnosis runs its
  coroutines on a private loop in a helper thread (one connection across the login and the operation;
  Playwright keeps a loop running in the main thread of the test process) and stops, drains and closes
  that loop in `close()`.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import secrets
import ssl
import threading
from typing import Any, Awaitable, Callable, Coroutine, TypeVar

from nats import errors as nerr
from nats.aio.client import Client as NATS

from .base import BrokerConfig, CheckFailed, Deadline, Driver, Greeting, Link, Passed, StepFailed, Wire, one_line
from .nats_spec import SPEC
from .net import classify, client_cert_alert, client_cert_failure, connect, diagnose, read_answer, ssl_context, upgrade

NATS_GREETING = Greeting("NATS", b"CONNECT {}\r\nPING\r\n", lambda reply: reply.startswith(b"INFO "))
_MAX_CONNECTIONS = "maximum connections exceeded"
_POLL = 0.02
_ERR_WAIT = 0.05   # seconds a server at its max_connections takes at most to follow INFO with -ERR
_ALERT_WAIT = 0.2  # seconds a TLS 1.3 server takes at most to refuse a client certificate after the handshake
T = TypeVar("T")
_CLOSE_WAIT = 0.5


def run_async(factory: Callable[[], Coroutine[Any, Any, T]], timeout: float) -> T:
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


_QUIET = _QuietSslEof()


def _quiet_asyncio() -> None:
    """Drop asyncio's "eof_received()" noise of aborted TLS transports: at first use, never at import."""
    logger = logging.getLogger("asyncio")
    if _QUIET not in logger.filters:
        logger.addFilter(_QUIET)


def _line_complete(data: bytes) -> bool:
    return b"\r\n" in data


def server_errors(reply: bytes) -> list[str]:
    """The texts of the `-ERR '...'` lines in a NATS server's answer."""
    return [line[5:].strip().strip("'") for line in reply.decode("utf-8", "replace").split("\r\n")
            if line.startswith("-ERR ")]


def server_refusal(host: str, port: int, timeout: float) -> str | None:
    """The `-ERR` a NATS server sends right after its INFO, before the client says a word (a server at its
    `max_connections` does so, then closes), or None."""
    try:
        sock = connect(host, port, timeout)
    except OSError:
        return None
    try:
        reply = read_answer(sock, timeout, _line_complete) or b""
        if reply.startswith(b"INFO ") and b"-ERR" not in reply:
            reply += read_answer(sock, min(timeout, _ERR_WAIT), _line_complete) or b""
    except OSError:
        return None
    finally:
        sock.close()
    errors = server_errors(reply)
    return errors[0] if errors else None


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
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(
            coroutine, self.loop)  # type: ignore[arg-type]
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


def _url(config: BrokerConfig) -> str:
    host = f"[{config.host}]" if ":" in config.host else config.host
    return f"{'tls' if config.tls else 'nats'}://{host}:{config.port}"


class NatsDriver(Driver):
    """NATS with nats-py: connect and PING/PONG for the check; INFO, CONNECT + PING/PONG with the configured
    login and a request to a private inbox for the diagnosis."""

    spec = SPEC
    texts = {
        "tls_required": (
            "The NATS server at {where} requires TLS (its INFO says tls_required), but TLS is off in the "
            "settings.",
            "Turn TLS on and upload the CA that signed the server certificate as the truststore; nats-py "
            "would otherwise upgrade on its own with the system CAs and fail."),
        "tls_not_offered": (
            "The NATS server at {where} does not offer TLS (its INFO has neither tls_required nor "
            "tls_available): nats-py would silently stay unencrypted.",
            "Enable TLS on the server (a tls {{ cert_file, key_file }} block in nats-server.conf) or point the "
            "settings at a TLS-enabled server; turn TLS off only if plaintext is intended."),
        "auth_failed": (
            "The NATS server refused the login ({login}): 'Authorization Violation'.",
            "Check the user and password or the token against the server's authorization block; a server "
            "configured with a token refuses user/password logins and vice versa."),
        "auth_failed/no_credentials": (
            "The NATS server requires authentication (its INFO says auth_required) and no credentials are "
            "set: 'Authorization Violation'.",
            "Set a username and password or a token, as configured in the server's authorization block."),
        "access_denied": (
            "The NATS server refused {login} the subject {subject} of the diagnosis's request on a private "
            "inbox.{said}",
            "Allow {username} to publish and subscribe on _INBOX.> (and on the subjects its services use) in "
            "the server's permissions: users = [{{user: {username}, permissions: {{publish: [\"_INBOX.>\", ...], "
            "subscribe: [\"_INBOX.>\", ...]}}}}]; then reload the server (nats-server --signal reload)."),
        "connection_limit": (
            "The NATS server at {where} refused the connection: 'maximum connections exceeded' (its "
            "max_connections is reached).",
            "Raise max_connections in the configuration of the server on {where} and reload it (nats-server "
            "--signal reload), or close idle clients; its monitoring endpoint (/connz) lists the connections "
            "that hold the slots."),
    }

    def __init__(self) -> None:
        super().__init__()
        self.runner: _LoopThread | None = None
        self.nc: NATS | None = None
        self.seen: list[BaseException] = []
        self.info: dict[str, Any] = {}

    def probe(self, config: BrokerConfig, deadline: Deadline) -> dict[str, Any]:
        """Connect and measure one round trip within `deadline`; the server's identity."""
        _quiet_asyncio()
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
        except TimeoutError as exc:
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
            failed = StepFailed("handshake_timeout", f"{where}: no NATS INFO/PONG within the timeout", unsure=True)
        else:
            failed = self.classify(config, outcome["error"], outcome["seen"], where)
        if failed.unsure and failed.cause not in ("connect_timeout", "handshake_timeout"):
            found = self._limited(host, port, deadline) or self._tls_refusal(config, deadline)
            if found is not None:
                return found
        if failed.unsure:
            return diagnose(config, host, port, deadline, NATS_GREETING, failed)
        return failed

    @staticmethod
    def _tls_refusal(config: BrokerConfig, deadline: Deadline) -> StepFailed | None:
        """A refused or missing client certificate, read as a NATS client meets it: INFO in plaintext, the
        TLS upgrade, then the first read after the handshake, where a TLS 1.3 server sends its alert (nothing
        is sent, so the probe leaves no authorization error in the server's log)."""
        if not config.tls:
            return None
        where = f"{config.host}:{config.port}"
        try:
            sock = connect(config.host, config.port, deadline.remaining())
        except OSError:
            return None
        try:
            read_answer(sock, deadline.remaining(0.5), _line_complete)
            with upgrade(sock, ssl_context(config), config.host, deadline.remaining(0.5)) as tls:
                read_answer(tls, deadline.remaining(_ALERT_WAIT), _line_complete)
        except ssl.SSLError as exc:
            alert = client_cert_alert(exc)
            if alert:
                refused = client_cert_failure(alert, bool(config.tls_cert_file), where)
                return StepFailed(refused.cause, refused.message, words=alert)
        except (OSError, ValueError, CheckFailed):
            pass
        finally:
            sock.close()
        return None

    @staticmethod
    def _limited(host: str, port: int, deadline: Deadline) -> StepFailed | None:
        """connection_limit when the server at host:port refuses new connections at its max_connections."""
        said = server_refusal(host, port, deadline.remaining(0.5))
        if said and _MAX_CONNECTIONS in said.lower():
            return StepFailed("connection_limit", f"{host}:{port}: -ERR '{said}' right after INFO",
                              words=f"-ERR '{said}'")
        return None

    @staticmethod
    def classify(config: BrokerConfig, exc: BaseException, seen: list[BaseException], where: str = "") -> StepFailed:
        """The cause of a failed nats-py connect or request (`seen`: what reached `error_cb`), for the
        check and the diagnosis alike."""
        prefix = f"{where}: " if where else ""
        candidates = [exc, *(e for e in reversed(seen) if e is not exc)]
        for candidate in candidates:
            alert = client_cert_alert(candidate)
            if alert and config.tls:
                found = client_cert_failure(alert, bool(config.tls_cert_file), where)
                return StepFailed(found.cause, found.message, words=alert)
            if _MAX_CONNECTIONS in str(candidate).lower():
                return StepFailed("connection_limit", f"{prefix}-ERR '{_MAX_CONNECTIONS}'",
                                  words=f"-ERR '{_MAX_CONNECTIONS}'")
        for candidate in candidates:
            words = one_line(str(candidate) or repr(candidate))
            if "authorization violation" in words.lower():
                variant = None if (config.username or config.token) else "no_credentials"
                return StepFailed("auth_failed", f"{prefix}{words}", words="Authorization Violation",
                                  variant=variant)
            if isinstance(candidate, (ssl.SSLError, ssl.CertificateError)) and not config.tls:
                return StepFailed("tls_required", f"{prefix}requires TLS but the settings ask for plaintext "
                                                  f"(nats-py's own TLS upgrade failed: {one_line(candidate)})")
            known = classify(candidate, during_tls=config.tls, where=where, client_cert=bool(config.tls_cert_file))
            if known is not None:
                return StepFailed(known.cause, known.message,
                                  unsure=known.cause in ("connect_timeout", "handshake_timeout", "tls_not_offered"))
        words = one_line(str(exc) or repr(exc))
        if "permissions violation" in words.lower():
            return StepFailed("access_denied", f"{prefix}{words}", words=words)
        if isinstance(exc, TimeoutError):
            return StepFailed("handshake_timeout", f"{prefix}{words}", unsure=True)
        if isinstance(exc, (nerr.NoServersError, nerr.Error, ConnectionError)) or "info" in words.lower():
            return StepFailed("unknown", f"{prefix}{words}", unsure=True)
        return StepFailed("unknown", f"{prefix}{one_line(f'{type(exc).__name__}: {exc}')}")

    # -- the diagnosis ---------------------------------------------------------------------------------

    @classmethod
    def wire(cls) -> Wire:
        return Wire(NATS_GREETING, _line_complete, server_first=True, starttls=True, listen_after_preamble=True)

    def check_preamble(self, preamble: bytes) -> None:
        self._refused(preamble)
        info = parse_info(preamble)
        if info and not (info.get("tls_required") or info.get("tls_available")):
            raise StepFailed("tls_not_offered", f"the server's INFO has neither tls_required nor tls_available "
                                                f"(nats-server {info.get('version', '?')})")

    def describe_handshake(self, reply: bytes) -> str:
        info = self.info = parse_info(reply)
        self._refused(reply)
        if not info:
            return "the server answered the NATS greeting"
        self.facts.update(version=info.get("version"), server_name=info.get("server_name"))
        if info.get("tls_required") and not self.config.tls:
            raise StepFailed("tls_required", "the server's INFO says tls_required")
        traits = [name for name, key in (("auth required", "auth_required"), ("TLS required", "tls_required"))
                  if info.get(key)]
        return (f"nats-server {info.get('version', '?')} (server {str(info.get('server_name', '?'))[:12]}…) sent "
                f"INFO{': ' + ', '.join(traits) if traits else ''}")

    @staticmethod
    def _refused(reply: bytes) -> None:
        """connection_limit when the server followed its INFO with -ERR 'maximum connections exceeded'."""
        if any(_MAX_CONNECTIONS in error.lower() for error in server_errors(reply)):
            raise StepFailed("connection_limit", f"the server sent INFO and then -ERR '{_MAX_CONNECTIONS}' and "
                                                 f"closed the connection", words=f"-ERR '{_MAX_CONNECTIONS}'")

    def auth(self, deadline: Deadline, link: Link) -> Passed:
        self.facts.update(username=self.config.username, login=self.login_words())
        _quiet_asyncio()
        self.runner = _LoopThread()
        context = ssl_context(self.config) if self.config.tls else None
        outcome = self.runner.run(self._connect(deadline, context), deadline.remaining())
        if isinstance(outcome, BaseException):
            failed = self.classify(self.config, outcome, self.seen)
            if failed.unsure and failed.cause not in ("connect_timeout", "handshake_timeout"):
                raise self._limited(self.config.host, self.config.port, deadline) or failed
            raise failed
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
        except TimeoutError:
            return TimeoutError("no CONNECT/PONG within the time left")
        except Exception as exc:  # noqa: BLE001 - classified by the caller
            return exc
        return None

    def operation(self, deadline: Deadline, link: Link) -> Passed:
        assert self.runner is not None
        outcome = self.runner.run(self._request(deadline), deadline.remaining())
        if isinstance(outcome, str):
            return Passed(outcome)
        denied = [e for e in self.seen if "permissions violation" in str(e).lower()]
        if denied:
            words = one_line(denied[0])
            raise StepFailed("access_denied", words, words=words, subject=self.facts.get("subject") or "_INBOX.>",
                             username=self.config.username or "the client")
        raise StepFailed("handshake_timeout" if isinstance(outcome, TimeoutError) else "unknown",
                         one_line(f"the inbox request failed: {outcome!r}"))

    async def _request(self, deadline: Deadline) -> str | BaseException:
        nc = self.nc
        assert nc is not None
        inbox = nc.new_inbox()
        self.facts["subject"] = inbox
        payload = secrets.token_hex(8).encode()
        try:
            subscription = await nc.subscribe(inbox)
            await nc.publish(inbox, payload)
            await nc.flush(timeout=max(deadline.remaining(), 0.01))  # type: ignore[arg-type]  # seconds as a float work (asyncio.wait_for)
            while True:
                try:
                    message = await subscription.next_msg(timeout=max(deadline.remaining(_POLL), 0.001))
                    break
                except (TimeoutError, nerr.TimeoutError):
                    if deadline.expired or any("permissions violation" in str(e).lower() for e in self.seen):
                        raise
            await subscription.unsubscribe()
        except TimeoutError as exc:
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


def connect_options(config: BrokerConfig, budget: float, on_error: Callable[[Exception], Awaitable[None]],
                    context: ssl.SSLContext | None, url: str) -> dict[str, Any]:
    """nats-py connect options for one attempt within `budget` seconds: no reconnects (0 would mean
    forever), the configured credentials, token and TLS context."""
    _quiet_asyncio()
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
