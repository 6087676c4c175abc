"""Rate limits (Flask-Limiter) kept in the console's own database, so that every gunicorn worker and
every replica on that database counts the same attempts. `CONSOLE_RATELIMIT_STORAGE_URI` may name
any other storage of the `limits` library (e.g. `redis://…`) instead."""
from __future__ import annotations

import logging
import time
from importlib import import_module
from typing import Any, cast

import sqlalchemy as sa
from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits.storage import Storage

from .database import reason
from .extensions import db
from .models import RateLimitCounter

SCHEME = "console-db"


class DatabaseStorage(Storage):
    """Fixed-window counters in the table rate_limit_counters: one atomic upsert per hit."""

    STORAGE_SCHEME = [SCHEME]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: Any) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)

    @property
    def base_exceptions(self) -> type[Exception]:
        return sa.exc.SQLAlchemyError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        table = cast(sa.Table, RateLimitCounter.__table__)
        now = time.time()
        # the upsert of the engine's own dialect (sqlite or postgresql), loaded with the engine already
        insert = import_module(f"sqlalchemy.dialects.{db.engine.dialect.name}").insert(table)
        expired = table.c.expires_at <= now
        statement = insert.values(key=key, count=amount, expires_at=now + expiry).on_conflict_do_update(
            index_elements=[table.c.key],
            set_={"count": sa.case((expired, amount), else_=table.c.count + amount),
                  "expires_at": sa.case((expired, now + expiry), else_=table.c.expires_at)},
        ).returning(table.c.count)
        with db.engine.begin() as conn:
            count = conn.execute(statement).scalar_one()
            conn.execute(sa.delete(table).where(table.c.expires_at < now - 3600))
        return int(count)

    def get(self, key: str) -> int:
        table = cast(sa.Table, RateLimitCounter.__table__)
        with db.engine.connect() as conn:
            count = conn.execute(sa.select(table.c.count).where(
                table.c.key == key, table.c.expires_at > time.time())).scalar()
        return int(count or 0)

    def get_expiry(self, key: str) -> float:
        table = cast(sa.Table, RateLimitCounter.__table__)
        with db.engine.connect() as conn:
            at = conn.execute(sa.select(table.c.expires_at).where(table.c.key == key)).scalar()
        return float(at) if at is not None else time.time()

    def check(self) -> bool:
        with db.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True

    def reset(self) -> int | None:
        with db.engine.begin() as conn:
            return conn.execute(sa.delete(cast(sa.Table, RateLimitCounter.__table__))).rowcount

    def clear(self, key: str) -> None:
        table = cast(sa.Table, RateLimitCounter.__table__)
        with db.engine.begin() as conn:
            conn.execute(sa.delete(table).where(table.c.key == key))


limiter = Limiter(key_func=get_remote_address, strategy="fixed-window")


class OneLine(logging.Filter):
    """Flask-Limiter logs a storage it cannot reach with a whole traceback ("Failed to rate limit.
    Swallowing error") at every request; when that storage is the console's database, which
    console.database already reports, one line with the database's reason says it."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, sa.exc.SQLAlchemyError):
            record.msg, record.args = f"{record.getMessage()}: {reason(error)}", ()
            record.exc_info, record.exc_text = None, None
        return True


def init_app(app: Flask) -> None:
    """Bind the limiter to the app (its storage from RATELIMIT_STORAGE_URI)."""
    app.config.setdefault("RATELIMIT_STORAGE_URI", f"{SCHEME}://")
    limiter.init_app(app)
    if not any(isinstance(f, OneLine) for f in limiter.logger.filters):
        limiter.logger.addFilter(OneLine())
