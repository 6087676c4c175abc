"""Logging in, roles (admin, viewer) and API tokens."""
from __future__ import annotations

import datetime as dt
import math
import re
import secrets
import time
from functools import lru_cache, wraps
from typing import Any, Callable
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_limiter import RateLimitExceeded
from flask_limiter.util import get_remote_address
from flask_login import current_user, login_required, login_url, login_user, logout_user
from flask_wtf import FlaskForm
from werkzeug.security import check_password_hash, generate_password_hash
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from ..crypto import token_digest
from ..extensions import db, login_manager
from ..models import ApiToken, User, utcnow
from ..ratelimit import limiter
from . import directory, oidc, roles

bp = Blueprint("auth", __name__)
LAST_USED_EVERY = dt.timedelta(seconds=60)   # a token's last use is written at most this often


class LoginForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=80)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


@login_manager.user_loader
def _load_user(session_id: str) -> User | None:
    """The user of a session id "<id>:<generation>"; None once that session was ended (logout)."""
    user_id, _, generation = session_id.partition(":")
    if not user_id.isdigit() or not generation.isdigit() or len(user_id) > 10 or len(generation) > 10:
        return None
    user = db.session.get(User, int(user_id))
    if user is None or (user.session_generation or 0) != int(generation):
        return None
    return user


_UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")


def safe_next(target: str | None) -> str:
    """`target` when it is a same-site relative path, else the settings page: no scheme, no host, no
    "//", no backslash and no control or white-space character (browsers drop tabs and new lines,
    and read a backslash as a slash, which makes "/\t/evil.example" a link to another site)."""
    fallback = url_for("settings.messaging")
    if not target or not target.startswith("/") or target.startswith("//") or _UNSAFE.search(target):
        return fallback
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return fallback
    return target


def _login_user_key() -> str:
    return "login-user:" + (request.form.get("username") or "").strip().lower()[:80]


def _login_address_key() -> str:
    return "login-address:" + (get_remote_address() or "unknown")[:80]


def _failed(response: Response) -> bool:
    return response.status_code == 401


_limit_user = limiter.limit(lambda: current_app.config["LOGIN_LIMIT_PER_USER"],
                            key_func=_login_user_key, methods=["POST"], deduct_when=_failed,
                            scope="login-user")
_limit_address = limiter.limit(lambda: current_app.config["LOGIN_LIMIT_PER_ADDRESS"],
                               key_func=_login_address_key, methods=["POST"], deduct_when=_failed,
                               scope="login-address")


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return generate_password_hash(secrets.token_urlsafe(16))


def authenticate(username: str, password: str) -> User | None:
    """The user with this name and password, or None; an unknown name costs one password hash too,
    so that timing does not tell which names exist."""
    user = db.session.execute(
        db.select(User).where(User.username == username.strip())).scalar_one_or_none()
    if user is None:
        check_password_hash(_dummy_hash(), password)
        return None
    return user if user.check_password(password) else None


def local_login_allowed(username: str) -> bool:
    """Whether `username` may sign in with a local password (CONSOLE_LOCAL_LOGIN=false: only the
    break-glass user)."""
    config = current_app.config
    if config.get("LOCAL_LOGIN", True):
        return True
    return bool(config.get("BREAK_GLASS_USER")) and username.strip() == config["BREAK_GLASS_USER"]


def _login_page(form: LoginForm, status: int, **context: Any):
    return render_template("auth/login.html", form=form, **context), status


def refused_page(username: str, provider: str, message: str, decision: roles.Decision | None,
                 status: int = 403):
    """The page a provider's user sees when signed in but refused (no mapped group, name taken)."""
    return render_template("auth/refused.html", username=username, provider=provider, message=message,
                           decision=decision), status


def sign_in_provider_user(username: str, provider: str, groups: list[str]):
    """Sign in someone a provider vouched for: the role from their groups, or the refusal page.
    Audited either way. Returns a response for refusals, else None (the caller redirects)."""
    decision = roles.decide(groups, current_app.config)
    if decision.role is None:
        wanted = ", ".join(decision.wanted) or "(CONSOLE_ROLE_MAPPING names none)"
        message = (f"{username} signed in, but is in none of the groups that give a role in this "
                   f"console. Ask for membership of one of: {wanted}.")
        roles.record("rejected", username=username, provider=provider, groups=groups,
                     reason="in no mapped group")
        return refused_page(username, provider, message, decision)
    try:
        user = roles.provider_user(username, provider, groups, decision.role)
    except roles.SignInRefused as exc:
        db.session.rollback()
        roles.record("rejected", username=username, provider=provider, groups=groups,
                     reason=exc.message)
        return refused_page(username, provider, exc.message, decision, exc.status)
    roles.record("applied", username=username, provider=provider, groups=groups, role=decision.role)
    login_user(user)
    return None


@bp.route("/login", methods=["GET", "POST"])
@_limit_address
@_limit_user
def login():
    form = LoginForm()
    if not form.validate_on_submit():
        return _login_page(form, 400 if request.method == "POST" else 200)
    username, password = form.username.data.strip(), form.password.data
    unavailable = None
    if directory.configured(current_app.config):
        try:
            found = directory.authenticate(current_app.config, username, password)
        except directory.DirectoryUnavailable as exc:
            found, unavailable = None, str(exc)
        if found is not None:
            refusal = sign_in_provider_user(found.username, "ldap", found.groups)
            if refusal is not None:
                return refusal
            return redirect(safe_next(request.args.get("next")))
    if local_login_allowed(username):
        user = authenticate(username, password)
        if user is not None:
            roles.record("applied", username=user.username, provider="local", role=user.role)
            login_user(user)
            return redirect(safe_next(request.args.get("next")))
    else:
        check_password_hash(_dummy_hash(), password)     # the same time as a wrong password
    if unavailable:
        roles.record("rejected", username=username, provider="ldap", reason="the directory does not answer")
        form.password.errors.append(f"{unavailable} Local users can still log in"
                                    + ("." if current_app.config.get("LOCAL_LOGIN", True)
                                       else " (the emergency admin only)."))
        return _login_page(form, 503)
    provider = "ldap" if directory.configured(current_app.config) else "local"
    roles.record("rejected", username=username, provider=provider, reason="wrong name or password")
    form.password.errors.append("Wrong username or password.")
    return _login_page(form, 401)


def public_url(path: str) -> str:
    """`path` as browsers reach the console: CONSOLE_PUBLIC_URL, else the request's scheme and host."""
    base = current_app.config.get("PUBLIC_URL") or request.host_url
    return str(base).rstrip("/") + path


def provider_problem(message: str, status: int):
    """The page of a provider sign-in that failed (4xx: refused; 503: the provider does not answer)."""
    return render_template("auth/provider_problem.html", message=message, status=status), status


@bp.get("/login/oidc")
def oidc_start():
    """Start the provider's flow; `?test=1` (admins): Test sign-in, which changes no one's session."""
    if not oidc.configured(current_app.config):
        abort(404)
    test = request.args.get("test") == "1"
    if test and not is_admin():
        abort(403)
    state = secrets.token_urlsafe(24)
    session["oidc_flow"] = {"state": state, "test": test,
                            "next": safe_next(request.args.get("next"))}
    try:
        return oidc.authorize_redirect(current_app._get_current_object(),
                                       public_url(url_for("auth.oidc_callback")), state)
    except oidc.ProviderUnavailable as exc:
        return provider_problem(f"{exc} Local users can still log in with their password"
                                + ("." if current_app.config.get("LOCAL_LOGIN", True)
                                   else " (the emergency admin only)."), 503)


@bp.get("/login/oidc/callback")
def oidc_callback():
    if not oidc.configured(current_app.config):
        abort(404)
    flow = session.pop("oidc_flow", None) or {}
    if request.args.get("error"):
        description = request.args.get("error_description") or request.args["error"]
        roles.record("rejected", username="anonymous", provider="oidc",
                     reason=f"the provider answered {request.args['error'][:80]}")
        return provider_problem(f"The provider did not sign you in: {description[:300]}", 403)
    if flow.get("state") != request.args.get("state"):
        roles.record("rejected", username="anonymous", provider="oidc", reason="wrong state")
        return provider_problem("The sign-in's state does not match this browser's: an old, reused or "
                                "forged link. Start the sign-in again.", 400)
    app = current_app._get_current_object()
    try:
        found = oidc.finish(app)
    except oidc.ProviderUnavailable as exc:
        roles.record("rejected", username="anonymous", provider="oidc", reason="the provider does not answer")
        return provider_problem(str(exc), 503)
    except oidc.SignInInvalid as exc:
        roles.record("rejected", username="anonymous", provider="oidc", reason=str(exc)[:300])
        return provider_problem(str(exc), 400)
    if flow.get("test"):
        if not is_admin():
            abort(403)
        decision = roles.decide(found.groups, current_app.config)
        roles.record_test(username=found.username, provider="oidc", groups=found.groups,
                          role=decision.role, tester=actor())
        return render_template("users/test_sign_in.html", result={
            "provider": "oidc", "username": found.username, "received": found.claims,
            "groups": found.groups, "decision": decision, "notes": found.notes})
    refusal = sign_in_provider_user(found.username, "oidc", found.groups)
    if refusal is not None:
        return refusal
    session["oidc_id_token"] = found.id_token
    return redirect(flow.get("next") or safe_next(None))


def _too_many(error: RateLimitExceeded):
    """429 with the login form and when to try again."""
    current = limiter.current_limit
    retry = max(1, math.ceil(current.reset_at - time.time())) if current is not None else None
    message = ("Too many failed log-ins for this user or from this address. "
               + (f"Try again in {retry} seconds." if retry else "Try again later."))
    if request.path.startswith("/api/"):
        return jsonify(error="rate_limited", message=message), 429
    form = LoginForm()
    form.password.errors = [message]
    return _login_page(form, 429)


@bp.post("/logout")
@login_required
def logout():
    """End the console session and, for a provider's user, the provider's session where it offers
    that (RP-initiated logout)."""
    id_token = session.pop("oidc_id_token", None)
    current_user.end_sessions()
    db.session.commit()
    logout_user()
    flash("Logged out.")
    if id_token and oidc.configured(current_app.config):
        url = oidc.logout_url(current_app._get_current_object(),
                              id_token, public_url(url_for("auth.login")))
        if url:
            return redirect(url)
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


def actor_provider() -> str | None:
    """How the acting user signed in: local, ldap, oidc — or token for an API token."""
    if g.get("api_token") is not None:
        return "token"
    if current_user.is_authenticated:
        return str(current_user.source or "local")
    return None


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


SESSION_ENDED = "Your session has ended: log in again to continue where you were."


def page_of_htmx_request() -> str:
    """The page an htmx request was made from (its HX-Current-URL), as a same-site path; the
    settings page when the header is missing or names another site."""
    current = urlsplit(request.headers.get("HX-Current-URL", ""))
    if current.netloc and current.netloc != request.host:
        return safe_next(None)
    return safe_next(current.path + (f"?{current.query}" if current.query else ""))


@login_manager.unauthorized_handler
def _unauthorized() -> Any:
    """A request without a session: to the log-in page and back here after signing in. For htmx
    (a poll, a save, a fragment) that is the whole tab, not the part it would swap: 401 with
    HX-Redirect to the log-in page, `next` the page the request was made from (not the fragment's
    address), and nothing swapped."""
    if request.headers.get("HX-Request") == "true":
        flash(SESSION_ENDED)
        target = url_for("auth.login", next=page_of_htmx_request())
        return Response(SESSION_ENDED, 401, {"HX-Redirect": target}, mimetype="text/plain")
    flash(login_manager.login_message)
    return redirect(login_url("auth.login", request.url))


def init_app(app: Flask) -> None:
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Log in to see the console."
    app.register_blueprint(bp)
    app.register_error_handler(RateLimitExceeded, _too_many)

    @app.context_processor
    def _roles() -> dict[str, Any]:
        config = app.config
        sign_in = {"ldap": directory.configured(config), "local": config.get("LOCAL_LOGIN", True),
                   "oidc": config.get("OIDC_NAME") if config.get("OIDC_ISSUER") else None}
        return {"is_admin": is_admin, "sign_in": sign_in}
