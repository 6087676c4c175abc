"""Signing in through OpenID Connect in Chromium, the whole flow: the console's "Sign in with …"
button, the provider's own login form (npm oidc-provider run by node, scripts/oidc-provider.mjs), back
to the console as an admin; a group-less user gets the refusal page; logging out goes on to the
provider's end-session page. Every request stays on 127.0.0.1."""
from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import identitylab
import pytest
from playwright.sync_api import expect
from werkzeug.serving import make_server

from tests.auth.conftest import MAPPING
from tests.conftest import make_app


@pytest.fixture
def identity_console(tmp_path: Path) -> Iterator[tuple[str, identitylab.Oidc]]:
    port = identitylab.free_port()
    base = f"http://127.0.0.1:{port}"
    lab = identitylab.start_oidc(tmp_path / "oidc", [base + "/login/oidc/callback"], [base + "/login"])
    app = make_app(tmp_path / "instance", WTF_CSRF_ENABLED=True, ROLE_MAPPING=MAPPING, OIDC_NAME="Identity lab",
                   **{key[len("CONSOLE_"):]: value for key, value in lab.env().items()})
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield base, lab
    finally:
        server.shutdown()
        thread.join(5)
        lab.stop()


@pytest.fixture
def loopback_page(page):
    problems: list[str] = []

    def route(r):
        if urlsplit(r.request.url).hostname != "127.0.0.1":
            problems.append(f"request left loopback: {r.request.url}")
            return r.abort()
        return r.continue_()

    page.route("**/*", route)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    yield page
    assert problems == []


def _provider_sign_in(page, name: str, password: str) -> None:
    expect(page.get_by_role("heading", name="Identity lab")).to_be_visible()
    page.fill("#login", name)
    page.fill("#password", password)
    page.get_by_role("button", name="Sign in").click()


def test_signing_in_through_the_provider_in_chromium(loopback_page, identity_console) -> None:
    base, lab = identity_console
    page = loopback_page
    page.goto(base + "/login")
    page.get_by_role("link", name="Sign in with Identity lab").click()
    assert page.url.startswith(lab.issuer + "/interaction/")
    _provider_sign_in(page, "alice", "wrong")
    expect(page.locator("#error")).to_have_text("Wrong name or password.")
    _provider_sign_in(page, "alice", "alice-password")
    expect(page.get_by_role("heading", name="Settings → Messaging")).to_be_visible()
    page.goto(base + "/users")
    alice = page.locator('li[data-user="alice"]')
    expect(alice).to_contain_text("OpenID Connect")
    expect(alice).to_contain_text("console-admins, console-viewers")
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile("^" + re.escape(lab.issuer + "/session/end")))
    page.get_by_role("button", name="Yes, sign me out").click()
    expect(page).to_have_url(re.compile("^" + re.escape(base + "/login")))   # the provider sent it back
    page.goto(base + "/users")
    expect(page).to_have_url(re.compile("^" + re.escape(base + "/login")))


def test_a_group_less_user_sees_the_refusal_in_chromium(loopback_page, identity_console) -> None:
    base, _lab = identity_console
    page = loopback_page
    page.goto(base + "/login")
    page.get_by_role("link", name="Sign in with Identity lab").click()
    _provider_sign_in(page, "nora", "nora-password")
    expect(page.get_by_role("heading", name="No role in this console")).to_be_visible()
    expect(page.locator("#refused-message")).to_contain_text("console-admins")
