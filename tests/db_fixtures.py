"""`db_app`: the same test on SQLite and on the PostgreSQL server of this machine (CONSOLE_TEST_PG_URL;
skipped without a server, except in CI where it must be there)."""
from __future__ import annotations

import atexit
import os
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa
from flask import Flask

from tests.conftest import _create, make_app

PG_URL = os.environ.get("CONSOLE_TEST_PG_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/console_test")
_MIGRATED: dict[str, str] = {}


def _own_database() -> str:
    """A database of these tests' own next to CONSOLE_TEST_PG_URL's (made anew once per session and
    process, dropped at its exit), so that they never touch the database other tests migrate up and
    down, nor one another test run on the same server is using."""
    base, name = PG_URL.rsplit("/", 1)
    own = f"{name}_boundary_{os.getpid()}"
    admin = sa.create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{own}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{own}"'))
    except Exception as exc:  # noqa: BLE001 - no server to test against
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is needed in CI: {exc}")
        pytest.skip(f"no PostgreSQL: {exc}")
    finally:
        admin.dispose()
    atexit.register(_drop, base, own)
    return f"{base}/{own}"


def _drop(base: str, own: str) -> None:
    admin = sa.create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{own}" WITH (FORCE)'))
    except sa.exc.SQLAlchemyError:
        pass                # the server went away meanwhile: nothing left to tidy
    finally:
        admin.dispose()


def _pg_app(instance: Path, **config) -> Flask:
    from flask_migrate import upgrade

    from console.extensions import db

    if "url" not in _MIGRATED:
        _MIGRATED["url"] = _own_database()
        app = _create(instance, SQLALCHEMY_DATABASE_URI=_MIGRATED["url"], **config)
        with app.app_context():
            upgrade()
    app = _create(instance, SQLALCHEMY_DATABASE_URI=_MIGRATED["url"], **config)
    with app.app_context():
        tables = [t.name for t in db.metadata.sorted_tables]
        with db.engine.begin() as conn:
            conn.execute(sa.text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    return app


@pytest.fixture(params=["sqlite", "postgresql"])
def db_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Flask]:
    """A console app on a fresh migrated database: SQLite, then PostgreSQL."""
    app = (make_app(tmp_path / "instance") if request.param == "sqlite"
           else _pg_app(tmp_path / "instance-pg"))
    yield app
    with app.app_context():
        from console.extensions import db
        db.session.remove()
        db.engine.dispose()
