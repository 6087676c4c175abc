"""Users page for admins: create users, change roles, set or generate passwords, remove users —
the same as the CLI `users` commands."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user

from ..auth import actor, admin_required, directory, oidc, roles
from ..auth import users as accounts
from ..htmx import confirmation, confirmed, is_htmx, render_page_or_fragment
from ..models import ROLES, SOURCES, User

bp = Blueprint("users", __name__)


def _render(status: int = 200, **context: Any):
    context = {"users": accounts.all_users(), "roles": ROLES, "sources": SOURCES, "errors": {}, "form": {},
               "row_errors": {}, **context}
    return render_page_or_fragment("users/users.html", "users/_users.html", status, **context)


def _user_or_404(user_id: int) -> User:
    user = accounts.get(user_id)
    if user is None:
        abort(404)
    return user


def _leave(message: str, endpoint: str):
    """After admins changed their own role or removed themselves: off this admin-only page."""
    flash(message)
    target = url_for(endpoint)
    if is_htmx():
        return "", 200, {"HX-Redirect": target}
    return redirect(target, 303)


@bp.get("/users")
@admin_required
def users_page():
    return _render()


@bp.post("/users")
@admin_required
def create():
    form = {k: request.form.get(k, "") for k in ("username", "role")}
    try:
        user, generated = accounts.create(form["username"], form["role"],
                                          request.form.get("password") or None,
                                          actor=actor(), origin="page")
    except accounts.UserError as exc:
        return _render(422, errors=exc.errors, form=form)
    shown_once = {"user": user.username, "password": generated} if generated else None
    return _render(201 if is_htmx() else 200, message=f"Created {user.role} user {user.username}.",
                   focus="message", shown_once=shown_once)


@bp.post("/users/<int:user_id>/role")
@admin_required
def change_role(user_id: int):
    user = _user_or_404(user_id)
    name, own = user.username, user.id == current_user.id
    try:
        changed = accounts.set_role(user, request.form.get("role"), actor=actor(), origin="page")
    except accounts.UserError as exc:
        return _render(422, row_errors={user_id: exc.errors}, focus=f"user-{user_id}-errors")
    if own and changed:
        login_user(user)   # a new role ends the user's sessions; this one goes on as a viewer
        return _leave(f"You are now {user.role}.", "settings.messaging")
    message = f"{name} is now {user.role}." if changed else f"{name} was {user.role} already."
    return _render(message=message, focus="message")


@bp.post("/users/<int:user_id>/password")
@admin_required
def reset_password(user_id: int):
    user = _user_or_404(user_id)
    try:
        generated = accounts.set_password(user, request.form.get("password") or None,
                                          actor=actor(), origin="page")
    except accounts.UserError as exc:
        return _render(422, row_errors={user_id: exc.errors}, focus=f"user-{user_id}-errors")
    if user.id == current_user.id:
        login_user(user)   # a new password ends every session of the user; this one stays
    if generated:
        return _render(message=f"New password for {user.username}; their sessions ended.",
                       focus="message", shown_once={"user": user.username, "password": generated})
    return _render(message=f"Password of {user.username} changed; their sessions ended.",
                   focus="message")


@bp.post("/users/<int:user_id>/remove")
@admin_required
def remove(user_id: int):
    user = _user_or_404(user_id)
    name, own = user.username, user.id == current_user.id
    if not confirmed():
        return confirmation(f"Remove user {name}?",
                            ("You are removing your own user: you will be logged out. " if own else "")
                            + f"{name} ({user.role}) can no longer log in; the audit log keeps what they did.",
                            f"Remove {name}", url_for("users.users_page"), "Users")
    try:
        accounts.remove(user, actor=actor(), origin="page")
    except accounts.UserError as exc:
        return _render(422, row_errors={user_id: exc.errors}, focus=f"user-{user_id}-errors")
    if own:
        logout_user()
        return _leave("Your user was removed.", "auth.login")
    return _render(message=f"Removed {name}.", focus="message")


@bp.route("/users/test-sign-in", methods=["GET", "POST"])
@admin_required
def test_sign_in():
    """Test sign-in: an LDAP bind with a name and password (or, by a link, the OpenID Connect flow),
    showing what the provider sent, the groups found and the role they give — signing no one in."""
    config = current_app.config
    result = None
    errors: dict[str, str] = {}
    form = {"username": request.form.get("username", "")}
    status = 200
    if request.method == "POST":
        if not directory.configured(config):
            errors["username"] = "LDAP is not configured (CONSOLE_LDAP_URL)."
        elif not form["username"].strip() or not request.form.get("password"):
            errors["username"] = "Give the name and the password of the person to test."
        else:
            try:
                found = directory.authenticate(config, form["username"], request.form.get("password", ""))
            except directory.DirectoryUnavailable as exc:
                errors["username"] = str(exc)
                status = 503
            else:
                if found is None:
                    errors["username"] = ("The directory found no such user, or the password is wrong "
                                          f"(filter {config['LDAP_USER_FILTER']} under "
                                          f"{config.get('LDAP_USER_BASE') or 'the root'}).")
                else:
                    decision = roles.decide(found.groups, config)
                    roles.record_test(username=found.username, provider="ldap", groups=found.groups,
                                      role=decision.role, tester=actor())
                    received = {"dn": found.dn, **found.attributes}
                    notes = [] if found.groups else [
                        f"No group matched {config['LDAP_GROUP_FILTER']} under "
                        f"{config.get('LDAP_GROUP_BASE') or 'the root'} for {found.dn}."]
                    result = {"provider": "ldap", "username": found.username, "received": received,
                              "groups": found.groups, "decision": decision, "notes": notes}
        if errors and status == 200:
            status = 422
    return render_template("users/test_sign_in.html", result=result, errors=errors, form=form,
                           oidc_on=oidc.configured(config)), status
