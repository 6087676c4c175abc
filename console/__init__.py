"""Messaging Console: an admin web console for the messaging layer of an event-driven platform."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask, redirect, url_for
from werkzeug.middleware.proxy_fix import ProxyFix

from .brokers import ProtocolConverter
from .config import ConfigError, Defaults, finish, parse_environment
from .crypto import read_or_create_key_file
from .lazy import LazyAppGroup

ROOT = Path(__file__).resolve().parent.parent


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the console: code defaults, then CONSOLE_* environment variables, then `test_config`.

    A variable that does not fit its declared type raises ConfigError (one line naming it)."""
    environment = parse_environment(os.environ)
    app = Flask(
        __name__,
        instance_path=instance_path(environment),
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
    )
    app.cli = LazyAppGroup(app.name)
    app.config.from_object(Defaults)
    app.config.update(environment)
    if test_config:
        app.config.update(test_config)
    finish(app.config)
    _finish_config(app)
    if app.config["PROXIES"]:
        # behind N reverse proxies: the client's address, scheme and host from their X-Forwarded-*
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=app.config["PROXIES"],  # type: ignore[method-assign]
                                x_proto=app.config["PROXIES"], x_host=app.config["PROXIES"])

    from . import auth, cli, database, errors, headers, inputs, ratelimit
    # the input check first of all before_request hooks: CSRF's reads the form (after which the body
    # is gone for a later check), the rate limiter's keys and the session's user touch the database
    inputs.init_app(app)
    from .extensions import csrf, db, login_manager, migrate
    db.init_app(app)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"), render_as_batch=True,
                     compare_type=True)
    csrf.init_app(app)
    login_manager.init_app(app)

    database.init_app(app)
    headers.init_app(app)
    ratelimit.init_app(app)
    from .adapters import bp as adapters_bp
    from .api import bp as api_bp
    from .audit.views import bp as audit_bp
    from .diagnostics.views import bp as diagnostics_bp
    from .health import bp as health_bp
    from .history import bp as history_bp
    from .settings.rollout_pages import bp as rollouts_bp
    from .settings.views import bp as settings_bp
    from .tokens import bp as tokens_bp
    from .users import bp as users_bp
    auth.init_app(app)
    errors.init_app(app)
    app.url_map.converters["protocol"] = ProtocolConverter
    for blueprint in (settings_bp, rollouts_bp, history_bp, adapters_bp, audit_bp, diagnostics_bp, api_bp,
                      health_bp, tokens_bp, users_bp):
        app.register_blueprint(blueprint)
    cli.init_app(app)
    from .checks import scheduler
    from .delivery import outbox, watch, waves
    from .settings import rollouts as settings_rollouts
    scheduler.init_app(app)
    outbox.init_app(app)
    watch.init_app(app)
    waves.init_app(app)
    settings_rollouts.init_app(app)

    @app.get("/")
    def index():
        return redirect(url_for("settings.messaging"))

    return app


def instance_path(environment: dict[str, Any]) -> str:
    """The instance directory the parsed CONSOLE_* `environment` names (or the default)."""
    return environment.get("INSTANCE_PATH") or str(ROOT / "instance")


def prepare_instance(path: str) -> None:
    """Create the instance directory (the SQLite database and the key files live there); ConfigError
    naming CONSOLE_INSTANCE_PATH when it cannot be created or written. gunicorn.conf.py calls it in
    the master too, so a bad path stops start-up once instead of failing every worker."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"CONSOLE_INSTANCE_PATH={path}: the instance directory cannot be created "
                          f"({exc.strerror or exc}); point it at a writable directory") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"CONSOLE_INSTANCE_PATH={path}: the instance directory is not writable; "
                          "point it at a writable directory")


def _finish_config(app: Flask) -> None:
    prepare_instance(app.instance_path)
    if not app.config.get("SQLALCHEMY_DATABASE_URI"):
        url = app.config.get("DATABASE_URL") or (
            "sqlite:///" + str(Path(app.instance_path) / "console.db"))
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        app.config["SQLALCHEMY_DATABASE_URI"] = url
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        # an unreachable server fails a connection attempt in seconds, not after the OS's minutes
        options = dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
        options["connect_args"] = {"connect_timeout": 5, **options.get("connect_args", {})}
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = options
    if not app.config.get("SECRET_KEY"):
        import secrets
        try:
            app.config["SECRET_KEY"] = read_or_create_key_file(
                Path(app.instance_path) / "secret.key", lambda: secrets.token_hex(32))
        except OSError as exc:
            raise ConfigError(f"CONSOLE_INSTANCE_PATH={app.instance_path}: the session key cannot be "
                              f"written there ({exc.strerror or exc}); point it at a writable directory, "
                              "or set CONSOLE_SECRET_KEY") from None
