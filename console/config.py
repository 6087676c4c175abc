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
    # configuration delivery: the outbox worker of every serving process
    DELIVERY_WORKER: bool = True
    DELIVERY_POLL_SECONDS: float = 1.0       # how often a worker looks for due callbacks
    DELIVERY_TIMEOUT: float = 3.0            # seconds per callback POST
    DELIVERY_MAX_ATTEMPTS: int = 10          # then the delivery is failed
    DELIVERY_RETRY_BASE: float = 1.0         # first retry after this, doubling each time
    DELIVERY_RETRY_MAX: float = 300.0        # longest wait between retries
    DELIVERY_LEASE_SECONDS: float = 30.0     # a claimed delivery is retaken by others after this
    DELIVERY_CONCURRENCY: int = 16           # callbacks sent at once per process
