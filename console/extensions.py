"""Flask extensions, created unbound and initialised in the app factory."""
from __future__ import annotations

import sqlite3
from typing import Any

from flask import Flask
from flask_login import LoginManager
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import MetaData, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase

from .lazy import LazyAppGroup, load

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with a naming convention, so migrations name constraints the same way."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Migrations:
    """Flask-Migrate without importing Alembic up front: `flask db …` and the first use of
    `app.extensions["migrate"]` (flask_migrate.upgrade(), migrations/env.py) bind it, so commands and
    workers that never migrate never load Alembic."""

    def init_app(self, app: Flask, db: SQLAlchemy, **options: Any) -> None:
        """Remember how to bind Flask-Migrate to `app`; register `flask db` lazily."""
        app.extensions["migrate"] = _Unbound(app, db, options)
        if isinstance(app.cli, LazyAppGroup):
            app.cli.lazy["db"] = "flask_migrate.cli:db"


class _Unbound:
    """Stands in `app.extensions["migrate"]` until first used, then binds the real Flask-Migrate."""

    def __init__(self, app: Flask, db: SQLAlchemy, options: dict[str, Any]) -> None:
        self._app, self._db, self._options = app, db, options

    def __getattr__(self, name: str) -> Any:
        if self._app.extensions.get("migrate") is self:
            load("flask_migrate:Migrate")(self._app, self._db, **self._options)
        return getattr(self._app.extensions["migrate"], name)


db = SQLAlchemy(model_class=Base)
migrate = Migrations()
csrf = CSRFProtect()
login_manager = LoginManager()


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """SQLite serves several workers: write-ahead logging lets readers run beside the one writer,
    and NORMAL synchronisation (safe with WAL) spares an fsync per commit."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()
