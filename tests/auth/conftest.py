"""The identity lab for sign-in tests: a seeded slapd (scripts/identitylab.py) per test session on free
loopback ports; each test that changes the directory restores it."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import identitylab  # scripts/ is on sys.path (tests/conftest.py)
import pytest
from flask import Flask

from tests.conftest import make_app

MAPPING = "admin=console-admins;viewer=console-viewers"


@pytest.fixture(scope="session")
def ldap_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[identitylab.Ldap]:
    identitylab.install()
    lab = identitylab.start_ldap(tmp_path_factory.mktemp("identity") / "ldap")
    yield lab
    lab.stop()


def ldap_config(lab: identitylab.Ldap, **extra: object) -> dict[str, object]:
    """The console's config for the lab's directory, as the README's variables set it."""
    config: dict[str, object] = {key[len("CONSOLE_"):]: value for key, value in lab.env().items()}
    config.update(ROLE_MAPPING=MAPPING, LDAP_TIMEOUT=2.0)
    config.update(extra)
    return config


@pytest.fixture
def ldap_app(tmp_path: Path, ldap_lab: identitylab.Ldap) -> Iterator[Flask]:
    app = make_app(tmp_path / "instance", **ldap_config(ldap_lab))
    yield app
    with app.app_context():
        from console.extensions import db
        db.engine.dispose()


PUBLIC = "http://127.0.0.1:9"          # the console's address in test-client tests (never dialled)
CALLBACK = PUBLIC + "/login/oidc/callback"


@pytest.fixture(scope="session")
def browser_console_port() -> int:
    """The port the browser test serves the console on (registered at the provider beforehand)."""
    return identitylab.free_port()


def start_provider(directory: Path, browser_port: int | None = None, **kwargs: object) -> identitylab.Oidc:
    uris = [CALLBACK] + ([f"http://127.0.0.1:{browser_port}/login/oidc/callback"] if browser_port else [])
    logout = [PUBLIC + "/login"] + ([f"http://127.0.0.1:{browser_port}/login"] if browser_port else [])
    return identitylab.start_oidc(directory, uris, logout, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def oidc_lab(tmp_path_factory: pytest.TempPathFactory,
             browser_console_port: int) -> Iterator[identitylab.Oidc]:
    lab = start_provider(tmp_path_factory.mktemp("identity") / "oidc", browser_console_port)
    yield lab
    lab.stop()


def oidc_config(lab: identitylab.Oidc, **extra: object) -> dict[str, object]:
    config: dict[str, object] = {key[len("CONSOLE_"):]: value for key, value in lab.env().items()}
    config.update(ROLE_MAPPING=MAPPING, OIDC_TIMEOUT=3.0, PUBLIC_URL=PUBLIC)
    config.update(extra)
    return config


def provider_login(start: str, name: str, password: str, console: str = PUBLIC):
    """Sign in at the provider as a browser does (its login form, then consent), following redirects
    until the one back to the console: the callback URL, or the provider's last response when it
    did not send the browser back (a wrong password)."""
    import requests

    browser = requests.Session()
    url, method, data = start, "GET", None
    for _ in range(12):
        response = browser.request(method, url, data=data, allow_redirects=False, timeout=10)
        if response.is_redirect:
            location = requests.compat.urljoin(url, response.headers["Location"])
            if location.startswith(console + "/") or not location.startswith("http://127.0.0.1:"):
                return location
            url, method, data = location, "GET", None
            continue
        if 'name="password"' in response.text and data is None:
            action = response.text.split('action="', 1)[1].split('"', 1)[0]
            url, method, data = requests.compat.urljoin(url, action), "POST", {"login": name,
                                                                                "password": password}
            continue
        return response
    raise AssertionError("too many redirects at the provider")
