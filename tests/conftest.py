"""Fixtures: an app on a fresh migrated SQLite database per test, clients logged in as each role,
API tokens, a test PKI, and (via tests.lab_fixtures) the real brokers of the lab."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

pytest_plugins = ["tests.lab_fixtures"]

ENV_PREFIXES = ("SP_", "CONSOLE_")
ENV_ALIASES = ("KAFKA_BROKERS", "NATS_SERVER_URL", "RABBIT_SERVER_URL")
ADMIN_PASSWORD = "admin-password-1"
VIEWER_PASSWORD = "viewer-password-1"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SP_*, alias or CONSOLE_* variable of the developer's shell reaches a test."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIXES) or name in ENV_ALIASES:
            monkeypatch.delenv(name)


_TEMPLATE_DB: dict[str, Path] = {}


def _create(instance: Path, **config) -> Flask:
    from console import create_app

    os.environ["CONSOLE_INSTANCE_PATH"] = str(instance)
    try:
        return create_app({
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{instance / 'console.db'}",
            "WTF_CSRF_ENABLED": False,
            "READY_CACHE_SECONDS": 0,
            **config,
        })
    finally:
        del os.environ["CONSOLE_INSTANCE_PATH"]


def make_app(instance: Path, **config) -> Flask:
    """A console app on a freshly migrated SQLite database in `instance` (migrated once per
    session with `flask db upgrade`, then copied)."""
    import shutil
    import tempfile

    from flask_migrate import upgrade

    if "db" not in _TEMPLATE_DB:
        template_dir = Path(tempfile.mkdtemp(prefix="console-template-"))
        template = _create(template_dir)
        with template.app_context():
            upgrade()
            from console.extensions import db
            db.engine.dispose()
        _TEMPLATE_DB["db"] = template_dir / "console.db"
    instance.mkdir(parents=True, exist_ok=True)
    shutil.copy(_TEMPLATE_DB["db"], instance / "console.db")
    return _create(instance, **config)


def reopen_app(instance: Path, **config) -> Flask:
    """Another console process on the database already in `instance` (as after a restart)."""
    return _create(instance, **config)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = make_app(tmp_path / "instance")
    yield app
    with app.app_context():
        from console.extensions import db
        db.engine.dispose()


@pytest.fixture
def csrf_app(tmp_path: Path) -> Flask:
    """An app with CSRF protection on, as in production."""
    return make_app(tmp_path / "instance-csrf", WTF_CSRF_ENABLED=True)


def add_user(app: Flask, name: str, role: str, password: str) -> None:
    from console.extensions import db
    from console.models import User

    with app.app_context():
        user = User(username=name, role=role)
        user.set_password(password)
        db.session.add(user)
        db.session.commit()


def login(client: FlaskClient, name: str, password: str) -> FlaskClient:
    response = client.post("/login", data={"username": name, "password": password})
    assert response.status_code == 302, response.data[:500]
    return client


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask):
    return app.test_cli_runner()


@pytest.fixture
def admin_client(app: Flask) -> FlaskClient:
    add_user(app, "admin", "admin", ADMIN_PASSWORD)
    return login(app.test_client(), "admin", ADMIN_PASSWORD)


@pytest.fixture
def viewer_client(app: Flask) -> FlaskClient:
    add_user(app, "viewer", "viewer", VIEWER_PASSWORD)
    return login(app.test_client(), "viewer", VIEWER_PASSWORD)


def make_token(app: Flask, name: str, role: str, service: str | None = None) -> str:
    args = ["tokens", "create", name, "--role", role] + (["--service", service] if service else [])
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 0, result.output
    return result.output.strip()


@pytest.fixture
def admin_token(app: Flask) -> str:
    return make_token(app, "ci-admin", "admin")


@pytest.fixture
def viewer_token(app: Flask) -> str:
    return make_token(app, "ci-viewer", "viewer")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A test CA with server, wrong-host, expired, soon-expiring and client certificates."""
    import pki as pki_module

    out = tmp_path_factory.mktemp("pki")
    pki_module.write_pki(out)
    return {p.name: p for p in out.iterdir()} | {"dir": out}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Browser tests run last: Playwright's sync API keeps an asyncio loop running in the main
    thread for the rest of the session, which other tests' asyncio.run() cannot share."""
    items.sort(key=lambda item: "tests/browser/" in item.nodeid)
