"""Code defaults of the console's own configuration. The environment is read in `create_app`, never
at import time."""
from __future__ import annotations


class Defaults:
    """Defaults; every key can be set as CONSOLE_<KEY> in the environment."""

    SECRET_KEY: str | None = None
    DATABASE_URL: str | None = None
    ENCRYPTION_KEY: str | None = None
    BIND = "127.0.0.1:8000"
    CHECK_INTERVAL = 30.0
    CHECK_TIMEOUT = 5.0
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}
    WTF_CSRF_TIME_LIMIT = None
    MAX_CONTENT_LENGTH = 2 * 1024 * 1024
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    REMEMBER_COOKIE_HTTPONLY = True
