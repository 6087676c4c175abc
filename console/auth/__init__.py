"""Logging in, roles (admin, viewer) and API tokens."""
from __future__ import annotations

import datetime as dt
from functools import wraps
from typing import Any, Callable

from flask import Blueprint, Flask, abort, flash, g, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from ..crypto import token_digest
from ..extensions import db, login_manager
from ..models import ApiToken, User, utcnow

bp = Blueprint("auth", __name__)
LAST_USED_EVERY = dt.timedelta(seconds=60)   # a token's last use is written at most this often


class LoginForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=80)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


@login_manager.user_loader
def _load_user(user_id: str) -> User | None:
    if not user_id.isdigit():
        return None
    return db.session.get(User, int(user_id))


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("settings.messaging")


@bp.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        user = db.session.execute(
            db.select(User).where(User.username == form.username.data.strip())).scalar_one_or_none()
        if user is not None and user.check_password(form.password.data):
            login_user(user)
            return redirect(_safe_next(request.args.get("next")))
        form.password.errors.append("Wrong username or password.")
        status = 401
    elif request.method == "POST":
        status = 400
    return render_template("auth/login.html", form=form), status


@bp.post("/logout")
@login_required
def logout():
    logout_user()
    flash("Logged out.")
    return redirect(url_for("auth.login"))


def presented_token() -> str:
    """The bearer token of this request's Authorization header ("" when there is none)."""
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else ""


def bearer_token() -> ApiToken | None:
    """The API token of this request's Authorization header, if valid."""
    token = presented_token()
    if not token:
        return None
    row = db.session.execute(
        db.select(ApiToken).where(ApiToken.digest == token_digest(token))).scalar_one_or_none()
    if row is not None and (row.last_used_at is None
                            or utcnow() - row.last_used_at > LAST_USED_EVERY):
        row.last_used_at = utcnow()
        db.session.commit()
    return row


def actor() -> str:
    """Who is acting, for records: the user name or token:NAME."""
    token = g.get("api_token")
    if token is not None:
        return f"token:{token.name}"
    if current_user.is_authenticated:
        return current_user.username
    return "anonymous"


def service_token() -> ApiToken | None:
    """The request's token when it is a service token."""
    token = g.get("api_token")
    return token if token is not None and token.role == "service" else None


def is_admin() -> bool:
    """True when the request acts with the admin role."""
    token = g.get("api_token")
    if token is not None:
        return token.is_admin
    return current_user.is_authenticated and current_user.is_admin


def admin_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """403 for viewers (page views)."""
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not current_user.is_authenticated:
            return login_manager.unauthorized()
        if not current_user.is_admin:
            abort(403)
        return view(*args, **kwargs)
    return wrapper


def init_app(app: Flask) -> None:
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Log in to see the console."
    app.register_blueprint(bp)

    @app.context_processor
    def _roles() -> dict[str, Any]:
        return {"is_admin": is_admin}
