"""Messaging Console: an admin web console for the messaging layer of an event-driven platform."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask, redirect, url_for
from werkzeug.middleware.proxy_fix import ProxyFix

from .config import Defaults, finish, parse_environment
from .crypto import read_or_create_key_file
from .lazy import LazyAppGroup

ROOT = Path(__file__).resolve().parent.parent


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the console: code defaults, then CONSOLE_* environment variables, then `test_config`.

    A variable that does not fit its declared type raises ConfigError (one line naming it)."""
    environment = parse_environment(os.environ)
    app = Flask(
        __name__,
        instance_path=environment.get("INSTANCE_PATH") or str(ROOT / "instance"),
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

    from .extensions import csrf, db, login_manager, migrate
    db.init_app(app)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"), render_as_batch=True,
                     compare_type=True)
    csrf.init_app(app)
    login_manager.init_app(app)

    from . import auth, cli, database, errors, headers, inputs, ratelimit
    database.init_app(app)
    inputs.init_app(app)
    headers.init_app(app)
    ratelimit.init_app(app)
    from .adapters import bp as adapters_bp
    from .api import bp as api_bp
    from .audit import bp as audit_bp
    from .diagnostics.views import bp as diagnostics_bp
    from .health import bp as health_bp
    from .history import bp as history_bp
    from .settings.views import bp as settings_bp
    from .tokens import bp as tokens_bp
    from .users import bp as users_bp
    auth.init_app(app)
    errors.init_app(app)
    for blueprint in (settings_bp, history_bp, adapters_bp, audit_bp, diagnostics_bp, api_bp,
                      health_bp, tokens_bp, users_bp):
        app.register_blueprint(blueprint)
    cli.init_app(app)

    @app.get("/")
    def index():
        return redirect(url_for("settings.messaging"))

    return app


def _finish_config(app: Flask) -> None:
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
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
        app.config["SECRET_KEY"] = read_or_create_key_file(
            Path(app.instance_path) / "secret.key", lambda: secrets.token_hex(32))
