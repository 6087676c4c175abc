"""API tokens page for admins: create (shown once), list, revoke — the same as the CLI and the API."""
from __future__ import annotations

from flask import Blueprint, request, url_for

from ..auth import actor, actor_provider, admin_required
from ..auth import tokens as api_tokens
from ..htmx import confirmation, confirmed, is_htmx, render_page_or_fragment
from ..models import TOKEN_ROLES

bp = Blueprint("tokens", __name__)


def _render(status: int = 200, **context):
    context = {"tokens": api_tokens.all_tokens(), "roles": TOKEN_ROLES, "errors": {},
               "form": {}, **context}
    return render_page_or_fragment("tokens/tokens.html", "tokens/_tokens.html", status, **context)


@bp.get("/tokens")
@admin_required
def tokens_page():
    return _render()


@bp.post("/tokens")
@admin_required
def create():
    form = {k: request.form.get(k, "") for k in ("name", "role", "service")}
    try:
        row, token = api_tokens.create(form["name"], form["role"], form["service"] or None,
                                       actor=actor(), origin="page", provider=actor_provider())
    except api_tokens.TokenError as exc:
        return _render(422, errors=exc.errors, form=form)
    return _render(201 if is_htmx() else 200, created={"row": row, "token": token})


@bp.post("/tokens/<name>/revoke")
@admin_required
def revoke(name: str):
    row = api_tokens.find(name)
    if row is not None and not confirmed():
        return confirmation(f"Revoke token {name}?",
                            f"Whatever uses the {row.role} token {name}"
                            + (f" (service {row.service})" if row.service else "")
                            + " is refused from then on; a revoked token cannot be restored.",
                            f"Revoke {name}", url_for("tokens.tokens_page"), "API tokens")
    if not api_tokens.revoke(name, actor=actor(), origin="page"):
        return _render(404, errors={"name": f"No token named {name}."})
    return _render(message=f"Revoked {name}.")
