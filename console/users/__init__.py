"""Users page for admins: create users, change roles, set or generate passwords, remove users —
the same as the CLI `users` commands."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, render_template, request
from flask_login import current_user, login_user

from ..auth import actor, admin_required
from ..auth import users as accounts
from ..htmx import is_htmx
from ..models import ROLES

bp = Blueprint("users", __name__)


def _render(status: int = 200, **context: Any):
    context = {"users": accounts.all_users(), "roles": ROLES, "errors": {}, "form": {},
               "row_errors": {}, **context}
    template = "users/_users.html" if is_htmx() else "users/users.html"
    return render_template(template, **context), status


def _user_or_404(user_id: int):
    user = accounts.get(user_id)
    if user is None:
        abort(404)
    return user


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
    message = f"Created {user.role} user {user.username}."
    return _render(201 if is_htmx() else 200, message=message, focus="message",
                   shown_once={"user": user.username, "password": generated} if generated else None)


@bp.post("/users/<int:user_id>/role")
@admin_required
def change_role(user_id: int):
    user = _user_or_404(user_id)
    name = user.username
    try:
        changed = accounts.set_role(user, request.form.get("role"), actor=actor(),
                                    acting_user=current_user, origin="page")
    except accounts.UserError as exc:
        return _render(422, row_errors={user_id: exc.errors}, focus=f"user-{user_id}-errors")
    message = f"{name} is now {user.role}." if changed else f"{name} was {user.role} already."
    return _render(message=message, focus="message")


@bp.post("/users/<int:user_id>/password")
@admin_required
def reset_password(user_id: int):
    user = _user_or_404(user_id)
    own = user.id == current_user.id
    try:
        generated = accounts.set_password(user, request.form.get("password") or None,
                                          actor=actor(), origin="page")
    except accounts.UserError as exc:
        return _render(422, row_errors={user_id: exc.errors}, focus=f"user-{user_id}-errors")
    if own:
        login_user(user)   # a new password ends every session, this one stays
    if generated:
        return _render(message=f"New password for {user.username}.", focus="message",
                       shown_once={"user": user.username, "password": generated})
    return _render(message=f"Password of {user.username} changed; their sessions ended.",
                   focus="message")


@bp.post("/users/<int:user_id>/remove")
@admin_required
def remove(user_id: int):
    user = _user_or_404(user_id)
    name = user.username
    try:
        accounts.remove(user, actor=actor(), acting_user=current_user, origin="page")
    except accounts.UserError as exc:
        return _render(422, row_errors={user_id: exc.errors}, focus=f"user-{user_id}-errors")
    return _render(message=f"Removed {name}.", focus="message")
