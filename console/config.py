"""Code defaults of the console's own configuration, with their types. The environment is read in
`create_app` (and by gunicorn.conf.py), never at import time.

Every annotated key of `Defaults` can be set as CONSOLE_<KEY>; `parse_environment` and `coerce` turn
the text of a variable into the annotated type, and a value that does not fit raises `ConfigError`
with one line naming the variable.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Mapping, Union, get_args, get_origin, get_type_hints

from .brokers import PROTOCOLS

PREFIX = "CONSOLE_"


class ConfigError(ValueError):
    """A CONSOLE_* value that does not fit its declared type; the message is one line."""


@dataclass(frozen=True)
class Range:
    """Inclusive bounds of a number."""

    low: float
    high: float


@dataclass(frozen=True)
class OneOf:
    """The allowed values (of a text, or of each item of a comma list)."""

    choices: tuple[str, ...]


@dataclass(frozen=True)
class Pattern:
    """A regular expression the whole text must match, and what it means in words."""

    regex: str
    meaning: str


@dataclass(frozen=True)
class RateLimit:
    """A rate limit in the notation of the `limits` library, e.g. `5 per minute`."""


Seconds = float
MiB = 1024 * 1024
BIND = Pattern(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}|unix:.+", "host:port (or unix:PATH)")
PORT = r"(6553[0-5]|655[0-2]\d|65[0-4]\d\d|6[0-4]\d{3}|[1-5]\d{4}|[1-9]\d{0,3})"
LDAP_URL_FORM = rf"ldaps?://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+)(:{PORT})?(/\S*)?"
ROLE_MAPPING = r"\s*(admin|viewer)\s*=[^;=]+(;\s*(admin|viewer)\s*=[^;=]+)*;?\s*"


class Defaults:
    """Defaults; every annotated key can be set as CONSOLE_<KEY> in the environment."""

    SECRET_KEY: str | None = None
    DATABASE_URL: str | None = None
    ENCRYPTION_KEY: str | None = None
    INSTANCE_PATH: str | None = None
    ADMIN_PASSWORD: str | None = None
    BIND: Annotated[str, BIND] = "127.0.0.1:8000"
    WORKERS: Annotated[int, Range(1, 64)] = 2
    THREADS: Annotated[int, Range(1, 256)] = 4
    CHECK_INTERVAL: Annotated[Seconds, Range(1, 86400)] = 30.0
    CHECK_TIMEOUT: Annotated[Seconds, Range(0.1, 300)] = 5.0
    CHECK_SCHEDULER: bool = True
    # on-demand broker work (Check now, Test connection, diagnoses): a bounded pool per process
    BROKER_WORK_THREADS: Annotated[int, Range(1, 256)] = 8      # run at once
    BROKER_WORK_QUEUE: Annotated[int, Range(0, 10000)] = 100     # page/API diagnoses waiting their turn
    BROKER_WORK_WAITING: Annotated[int, Range(1, 256)] = 2      # web threads waiting for an answer
    DIAGNOSE_MAX_TIMEOUT: Annotated[Seconds, Range(0.1, 300)] = 30.0   # largest API ?timeout=
    READY_REQUIRED: Annotated[list[str], OneOf(PROTOCOLS)] | None = None
    READY_CACHE_SECONDS: Annotated[Seconds, Range(0, 3600)] = 1.0
    MAX_CONTENT_LENGTH: Annotated[int, Range(64 * 1024, 1024 * MiB)] = 2 * MiB
    SESSION_COOKIE_SECURE: bool = False
    PROXIES: Annotated[int, Range(0, 10)] = 0   # reverse proxies in front whose X-Forwarded-* count
    SESSION_COOKIE_SAMESITE: Annotated[str, OneOf(("Lax", "Strict"))] = "Lax"
    WTF_CSRF_TIME_LIMIT: Annotated[int, Range(60, 7 * 86400)] = 8 * 3600
    LOGIN_LIMIT_PER_USER: Annotated[str, RateLimit()] = "5 per minute; 30 per hour"
    LOGIN_LIMIT_PER_ADDRESS: Annotated[str, RateLimit()] = "20 per minute; 200 per hour"
    RATELIMIT_STORAGE_URI: str = "console-db://"
    # configuration delivery: the outbox worker of every serving process
    DELIVERY_WORKER: bool = True
    DELIVERY_POLL_SECONDS: Annotated[Seconds, Range(0.05, 3600)] = 1.0   # looks for due callbacks
    DELIVERY_TIMEOUT: Annotated[Seconds, Range(0.1, 60)] = 3.0            # per callback POST
    DELIVERY_MAX_ATTEMPTS: Annotated[int, Range(1, 1000)] = 10            # then it is failed
    DELIVERY_RETRY_BASE: Annotated[Seconds, Range(0.01, 3600)] = 1.0      # doubling each retry
    DELIVERY_RETRY_MAX: Annotated[Seconds, Range(0.01, 86400)] = 300.0    # longest wait
    DELIVERY_LEASE_SECONDS: Annotated[Seconds, Range(1, 3600)] = 30.0     # a claim is retaken after
    DELIVERY_CONCURRENCY: Annotated[int, Range(1, 256)] = 16              # callbacks at once
    # secret references (file:/path, env:NAME): how often each process looks for a changed one; 0: never
    REFERENCE_POLL_SECONDS: Annotated[Seconds, Range(0, 3600)] = 10.0
    # signing in with the organisation's identity (README "Signing in with LDAP or OpenID Connect")
    PUBLIC_URL: Annotated[str, Pattern(r"https?://[^\s/]+(/\S*)?", "an http(s) URL")] | None = None
    OIDC_ISSUER: Annotated[str, Pattern(r"https?://\S+", "an http(s) URL")] | None = None
    OIDC_NAME: str = "OpenID Connect"           # "Sign in with <name>" on the log-in page
    OIDC_CLIENT_ID: str | None = None
    OIDC_CLIENT_SECRET: str | None = None
    OIDC_SCOPES: str = "openid profile email groups"
    OIDC_USERNAME_CLAIM: str = "preferred_username"
    OIDC_GROUPS_CLAIM: str = "groups"
    OIDC_CA_FILE: str | None = None
    OIDC_TIMEOUT: Annotated[Seconds, Range(0.1, 60)] = 5.0
    LDAP_URL: Annotated[str, Pattern(LDAP_URL_FORM, "ldap://HOST:PORT or ldaps://HOST:PORT")] | None = None
    LDAP_START_TLS: bool = False
    LDAP_CA_FILE: str | None = None
    LDAP_BIND_DN: str | None = None
    LDAP_BIND_PASSWORD: str | None = None
    LDAP_USER_BASE: str = ""
    LDAP_USER_FILTER: Annotated[str, Pattern(r"\(.*\{username\}.*\)",
                                             "a filter in parentheses naming {username}")] = \
        "(uid={username})"
    LDAP_GROUP_BASE: str = ""
    LDAP_GROUP_FILTER: Annotated[str, Pattern(r"\(.*\)", "a filter in parentheses")] = \
        "(member={dn})"
    LDAP_TIMEOUT: Annotated[Seconds, Range(0.1, 60)] = 3.0
    ROLE_MAPPING: Annotated[str, Pattern(ROLE_MAPPING,
                                         "admin=GROUP[,GROUP…];viewer=GROUP[,GROUP…]")] | None = None
    ROLE_DEFAULT: Annotated[str, OneOf(("none", "viewer"))] = "none"
    LOCAL_LOGIN: bool = True
    BREAK_GLASS_USER: str | None = None
    # held watches of a service's configuration (GET …/config?wait=S)
    WATCH_MAX_WAIT: Annotated[int, Range(1, 3600)] = 300                  # longest ?wait=
    WATCH_HELD: Annotated[int, Range(0, 65536)] = 4096     # watches held per process (none takes a thread)
    WATCH_POLL_SECONDS: Annotated[Seconds, Range(0.05, 60)] = 0.5         # other replicas' changes
    # fixed, not read from the environment (no annotation)
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}
    SESSION_COOKIE_HTTPONLY = True
    REMEMBER_COOKIE_HTTPONLY = True
    RATELIMIT_HEADERS_ENABLED = True
    RATELIMIT_SWALLOW_ERRORS = True      # a database outage is reported by the view, not the limiter


def declared() -> dict[str, Any]:
    """Key → declared type of every setting that the environment may set."""
    return get_type_hints(Defaults, include_extras=True)


def _words(value: str) -> str:
    return value if len(value) <= 60 else value[:57] + "..."


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("use true or false")


def _parse(value: Any, kind: Any) -> Any:
    """`value` (text from the environment, or an already typed value) as `kind`."""
    origin = get_origin(kind)
    if origin is Annotated:
        base, *marks = get_args(kind)
        out = _parse(value, base)
        for mark in marks:
            _check(out, mark)
        return out
    if origin is Union:
        options = [a for a in get_args(kind) if a is not type(None)]
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return _parse(value, options[0])
    if origin is list:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, (list, tuple)):
            return [str(v) for v in value]
        raise ValueError("use a comma-separated list")
    if kind is bool:
        return value if isinstance(value, bool) else _bool(str(value))
    if kind is int:
        if isinstance(value, bool):
            raise ValueError("use a whole number")
        if isinstance(value, int):
            return value
        try:
            return int(str(value).strip())
        except ValueError:
            raise ValueError("use a whole number") from None
    if kind is float:
        if isinstance(value, bool):
            raise ValueError("use a number")
        try:
            out = float(str(value).strip()) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            raise ValueError("use a number") from None
        if out != out or out in (float("inf"), float("-inf")):
            raise ValueError("use a finite number")
        return out
    if kind is str:
        if not isinstance(value, str):
            raise ValueError("use text")
        return value
    return value


def _check(value: Any, mark: Any) -> None:
    if isinstance(mark, Range):
        if not mark.low <= value <= mark.high:
            raise ValueError(f"use a value from {mark.low:g} to {mark.high:g}")
    elif isinstance(mark, OneOf):
        items = value if isinstance(value, list) else [value]
        wrong = [v for v in items if v not in mark.choices]
        if wrong:
            raise ValueError(f"{', '.join(wrong)} is not one of {', '.join(mark.choices)}")
    elif isinstance(mark, Pattern):
        if not re.fullmatch(mark.regex, value):
            raise ValueError(f"use {mark.meaning}")
    elif isinstance(mark, RateLimit):
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError:
            raise ValueError("use a rate like '5 per minute' (several joined by ';')") from None


def coerce(key: str, value: Any, *, source: str | None = None) -> Any:
    """`value` of setting `key` as its declared type; ConfigError naming `source` when it does not fit."""
    kind = declared().get(key)
    if kind is None:
        return value
    if key == "READY_REQUIRED" and isinstance(value, str):
        value = value.lower()
    try:
        return _parse(value, kind)
    except ValueError as exc:
        name = source or f"{PREFIX}{key}"
        raise ConfigError(f"{name}={_words(str(value))!s} is invalid: {exc}.") from None


def parse_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """Every CONSOLE_* variable of `environ`: declared ones parsed to their types, others as text."""
    out: dict[str, Any] = {}
    for name in sorted(environ):
        if not name.startswith(PREFIX):
            continue
        key = name[len(PREFIX):]
        if not key or key.startswith("TEST_"):
            continue
        out[key] = coerce(key, environ[name], source=name)
    return out


def finish(config: dict[str, Any]) -> None:
    """Check every declared key of an assembled config (defaults, environment, test config)."""
    for key in declared():
        if key in config:
            config[key] = coerce(key, config[key])
