"""Configuration history: every saved version, the diff between any two, and rollback through the
impact preview."""
from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import login_required

from ..auth import actor, admin_required
from ..htmx import is_htmx
from ..settings import transfer

bp = Blueprint("history", __name__, url_prefix="/settings/messaging/history")


@bp.get("")
@login_required
def history_page():
    versions = transfer.versions(200)
    a, b = request.args.get("a", type=int), request.args.get("b", type=int)
    if b is None and versions:
        b = versions[0].id
    if a is None and len(versions) > 1:
        a = versions[1].id
    diff = transfer.version_diff(a, b) if a and b else None
    context = {"versions": versions, "a": a, "b": b, "diff": diff,
               "missing": bool(a and b and diff is None)}
    if is_htmx() and request.args.get("fragment") == "diff":
        return render_template("history/_diff.html", **context)
    return render_template("history/history.html", **context)


@bp.get("/<int:version_id>/preview")
@admin_required
def preview(version_id: int):
    outcome = transfer.rollback(version_id, actor=actor(), origin="page", dry_run=True)
    if outcome is None:
        abort(404)
    return _preview(version_id, outcome)


def _preview(version_id: int, outcome, status: int = 200):
    """The rollback preview: the fragment to htmx, a page of its own without JavaScript."""
    if is_htmx():
        return render_template("history/_preview.html", version_id=version_id, outcome=outcome,
                               is_htmx_request=True), status
    return render_template("history/preview.html", version_id=version_id, outcome=outcome), status


@bp.post("/<int:version_id>/rollback")
@admin_required
def rollback(version_id: int):
    outcome = transfer.rollback(version_id, actor=actor(), origin="page",
                                confirm=bool(request.form.get("confirm")))
    if outcome is None:
        abort(404)
    if outcome.status == "confirm":
        return _preview(version_id, outcome, 409)
    message = transfer.rollback_message(version_id, outcome)
    if is_htmx():
        if outcome.status == "applied":     # the reloaded page (new version listed) says it
            flash(message)
            return render_template("history/_done.html", message=message), 200, {"HX-Refresh": "true"}
        return render_template("history/_done.html", message=message)
    flash(message)
    return redirect(url_for("history.history_page"))
