"""How `make run` serves the console: gunicorn with `Worker` below, an asyncio worker (uvicorn's), so
that held watches take no thread.

Every request goes to the Flask app through a2wsgi's pool of `CONSOLE_THREADS` threads — pages, the
API, `/healthz` — as before. A watch (`GET /api/v1/services/<name>/config?wait=S`) goes there too, so
that tokens, validation, 304/429 and everything else stay the view's; when the view would hold it, it
fills the dict this module puts in the request's scope instead (console/delivery/watch.py `deferred`)
and the watch waits here as a future on the event loop, without a thread. One task per process
answers the held watches when a change is announced (`watch.Hub`): it runs `watch.answer` for all
of them at once on a thread of its own (one query to compare, one snapshot, one commit), so a change
seen by 2,000 watchers is one batch, not 2,000 requests, and never waits behind the page threads. A
watch whose wait ends goes back to the view once more (the view answers it as it stands: 304, the
fetch recorded). Stopping the worker ends every watch at once (304).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any

from a2wsgi.wsgi import WSGIMiddleware, WSGIResponder
from flask import Flask
from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from .delivery import watch

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

WATCH_PATH = re.compile(r"/api/v1/services/[^/]+/config")
REPLACED = {b"content-length", b"content-type", b"etag", b"cache-control"}


class Console:
    """The ASGI application: the Flask app for everything, watches held on the event loop."""

    def __init__(self, app: Flask, threads: int, access: Callable[..., None] | None = None) -> None:
        self.app = app
        self.access = access
        self.pages = _Pages(app, workers=threads)      # type: ignore[arg-type]
        self.waiting: dict[asyncio.Future[Any], dict[str, Any]] = {}
        self._answering = ThreadPoolExecutor(1, thread_name_prefix="watch-answer")
        self._changed: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http" or self.access is None:
            await self._http(scope, receive, send)
            return
        started, sent = time.monotonic(), _Sent()

        async def counted(message: Message) -> None:
            sent.count(message)
            await send(message)

        try:
            await self._http(scope, receive, counted)
        finally:
            self.access(sent, _Request(scope), _environ(scope),
                        dt.timedelta(seconds=time.monotonic() - started))

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] == "GET" and b"wait=" in scope["query_string"]
                and WATCH_PATH.fullmatch(scope["path"])):
            await self._watch(scope, receive, send)
        else:
            await self.pages(scope, receive, send)   

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                watch.close(self.app)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _start(self) -> None:
        if self._task is not None:
            return
        loop = asyncio.get_running_loop()
        changed = self._changed = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(changed.set)

        watch.hub(self.app).subscribe(wake)
        self._task = loop.create_task(self._answer_changes(changed))

    async def _answer_changes(self, changed: asyncio.Event) -> None:
        """Answer the held watches whose document changed, each time a change is announced."""
        loop = asyncio.get_running_loop()
        hub = watch.hub(self.app)
        while True:
            await changed.wait()
            changed.clear()
            batch = [(future, hold) for future, hold in self.waiting.items() if not future.done()]
            if hub.closing:
                for future, _ in batch:
                    future.set_result(None)
                continue
            if not batch:
                continue
            try:
                answers = await loop.run_in_executor(self._answering, watch.answer, self.app,
                                                     [hold for _, hold in batch])
            except Exception:  # noqa: BLE001 - a database outage: the watches wait on (their wait ends)
                log.exception("watch: cannot answer the held watches")
                continue
            for (future, _), answer in zip(batch, answers):
                if answer is not None and not future.done():
                    future.set_result(answer)

    async def _watch(self, scope: Scope, receive: Receive, send: Send) -> None:
        hold: dict[str, Any] = {}
        first: list[Message] = []

        async def keep(message: Message) -> None:
            first.append(message)

        await self.pages({**scope, watch.SCOPE_KEY: hold}, receive, keep)
        if not hold:                          # answered at once (200, 304, 400, 404, 429 …)
            for message in first:
                await send(message)
            return
        self._start()
        assert self._changed is not None
        hub = watch.hub(self.app)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        gone = asyncio.ensure_future(_disconnected(receive))
        self.waiting[future] = hold
        hub.hold()
        if hub.generation != hold["generation"] or hub.closing:
            self._changed.set()               # a change came between the view's read and now
        try:
            await asyncio.wait({future, gone}, timeout=max(0.0, hold["ends"] - time.monotonic()),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            del self.waiting[future]
            hub.release()
            if not gone.done():
                gone.cancel()
        if gone.done() and not future.done():
            return                            # nobody to answer
        answer: tuple[int, str, bytes] | None = future.result() if future.done() else (0, "", b"")
        if answer is None:                    # the process is stopping: the view's 304
            for message in first:
                await send(message)
        elif answer[0] != 200:                # the wait ended, the service is gone: the view answers
            await self.pages({**scope, watch.SCOPE_KEY: watch.NOW}, _no_body, send)
        else:
            _, tag, body = answer
            headers = [(k, v) for k, v in first[0]["headers"] if k.lower() not in REPLACED]
            headers += [(b"Content-Type", b"application/json"), (b"Content-Length", str(len(body)).encode()),
                        (b"ETag", f'"{tag}"'.encode()), (b"Cache-Control", b"no-store")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})


class _Responder(WSGIResponder):
    """a2wsgi's, with the header names as the app wrote them (a2wsgi lowercases them; HTTP does not
    care, but clients that look up `ETag` in a plain dict do, and gunicorn kept them)."""

    def start_response(self, status: str, response_headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Any:
        self.exc_info = exc_info
        if not self.response_started:
            self.response_started = True
            self.send({"type": "http.response.start", "status": int(status.split(" ", 1)[0]),
                       "headers": [(name.strip().encode("latin1"), value.strip().encode("latin1"))
                                   for name, value in response_headers]})
        return lambda chunk: self.send({"type": "http.response.body", "body": chunk, "more_body": True})


class _Pages(WSGIMiddleware):
    """The Flask app on a2wsgi's thread pool."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await _Responder(self.app, self.executor, self.send_queue_size)(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


class _Sent:
    """What gunicorn's access log reads of a response (its format stays the one `make run` logs)."""

    def __init__(self) -> None:
        self.status = 0
        self.sent = 0
        self.headers: list[tuple[str, str]] = []

    def count(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = [(k.decode("latin1"), v.decode("latin1")) for k, v in message["headers"]]
        elif message["type"] == "http.response.body":
            self.sent += len(message.get("body", b""))


class _Request:
    def __init__(self, scope: Scope) -> None:
        self.headers = [(k.decode("latin1").upper(), v.decode("latin1")) for k, v in scope["headers"]]


def _environ(scope: Scope) -> dict[str, Any]:
    query = scope["query_string"].decode("latin1")
    headers = {k.lower(): v.decode("latin1") for k, v in scope["headers"]}
    return {"REMOTE_ADDR": (scope.get("client") or ("-",))[0], "REQUEST_METHOD": scope["method"],
            "RAW_URI": scope["path"] + ("?" + query if query else ""), "PATH_INFO": scope["path"],
            "QUERY_STRING": query, "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
            "HTTP_REFERER": headers.get(b"referer", "-"), "HTTP_USER_AGENT": headers.get(b"user-agent", "-")}


async def _disconnected(receive: Receive) -> None:
    """Returns when the watcher goes away (its connection closed)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class _Server(Server):
    """uvicorn's server that ends the held watches first when told to stop, so that they never hold
    up a restart."""

    console: Console | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.console is not None:
            watch.close(self.console.app)
        super().handle_exit(sig, frame)


def _exit(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)


class Worker(UvicornWorker):
    """gunicorn's worker for `make run`: asyncio and h11; the client address as the socket gives it
    (the Flask app applies CONSOLE_PROXIES itself); held watches take no thread."""

    CONFIG_KWARGS = {"loop": "asyncio", "http": "h11", "proxy_headers": False, "lifespan": "on",
                     "access_log": False}       # logged in gunicorn's format by Console

    flask: Flask

    def init_signals(self) -> None:
        """uvicorn hands a stop signal on to the handler it found once it has stopped; with
        SIG_DFL there the process would die without gunicorn's worker_exit (work.stop) — so exit."""
        super().init_signals()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, _exit)

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.flask = self.wsgi
        self.wsgi: Any = Console(self.flask, threads=max(1, int(self.cfg.threads)), access=self.log.access)

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = _Server(config=self.config)
        server.console = self.wsgi
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
