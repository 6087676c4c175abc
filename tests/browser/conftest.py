"""Real-browser fixtures: Debian's Chromium driven by Playwright, the console served on 127.0.0.1
by a werkzeug server in a thread, every request checked to stay on loopback."""
from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import pytest
from werkzeug.serving import make_server

from tests.conftest import ADMIN_PASSWORD, add_user, make_app

EXPECTED_STATUS = re.compile(r"status of (409|422)")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: run `make test` (it installs the Debian package).")
    return {**browser_type_launch_args, "executable_path": CHROMIUM,
            "args": ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run"]}


@pytest.fixture
def live_app(tmp_path: Path):
    """The console app the live server serves (for seeding data)."""
    app = make_app(tmp_path / "instance", WTF_CSRF_ENABLED=True)
    add_user(app, "admin", "admin", ADMIN_PASSWORD)
    return app


@pytest.fixture
def live_server(live_app) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, live_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


@pytest.fixture
def guarded_page(page, live_server: str):
    """A page that records JavaScript errors and aborts any request leaving 127.0.0.1."""
    problems: list[str] = []
    htmx_requests: list[str] = []

    def route(r):
        host = urlsplit(r.request.url).hostname
        if host != "127.0.0.1":
            problems.append(f"request left loopback: {r.request.url}")
            return r.abort()
        if r.request.headers.get("hx-request") == "true":
            htmx_requests.append(f"{r.request.method} {urlsplit(r.request.url).path}")
        return r.continue_()

    page.route("**/*", route)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type == "error" and not EXPECTED_STATUS.search(m.text) else None)
    page.problems = problems
    page.htmx_requests = htmx_requests
    page.base = live_server
    yield page
    assert problems == []
