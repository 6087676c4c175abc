"""Settings → Roll-outs: the roll-outs in waves — the one in progress or halted with its first wave
and every service's state, the recent ones — and the admin's Resume and Roll back (confirmed: by
htmx's question, or without JavaScript on a confirmation page; audited by the delivery layer)."""
from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_login import login_required

from ..auth import actor, admin_required
from ..delivery import plans, waves
from ..extensions import db
from ..htmx import confirmation, confirmed, is_htmx
from ..models import Rollout, utcnow
from . import rollouts as rollback_service

RECENT = 10

bp = Blueprint("rollouts", __name__, url_prefix="/settings/rollouts")


def progress(doc: dict[str, Any]) -> dict[str, Any]:
    """How far a roll-out's first wave is: applied / failed / waiting counts, the share done (%),
    and the seconds left before its deadline (None once it is not in its wave)."""
    wave = [s for s in doc["services"] if s["wave"] == 1]
    applied = sum(1 for s in wave if s["state"] == "applied")
    failed = sum(1 for s in wave if s["state"] == "failed")
    left = None
    if doc["state"] == "wave" and doc["deadline_at"]:
        deadline = dt.datetime.fromisoformat(doc["deadline_at"])
        deadline = deadline if deadline.tzinfo else deadline.replace(tzinfo=dt.UTC)
        left = max(0, int((deadline - utcnow()).total_seconds()))
    return {"wave": len(wave), "applied": applied, "failed": failed,
            "waiting": len(wave) - applied - failed,
            "percent": round(100 * applied / len(wave)) if wave else 0, "left": left,
            "held": len(doc["held"])}


def view(rollout: Rollout) -> dict[str, Any]:
    """A roll-out as the pages show it: its document and its progress."""
    doc = plans.document(rollout)
    assert doc is not None
    return {**doc, "progress": progress(doc)}


def rollouts_context(message: str | None = None, error: str | None = None) -> dict[str, Any]:
    rows = list(db.session.execute(db.select(Rollout).order_by(Rollout.id.desc())
                                   .limit(RECENT + 1)).scalars())
    active = [view(r) for r in rows if r.state in plans.ACTIVE]
    recent = [plans.document(r) for r in rows if r.state not in plans.ACTIVE][:RECENT]
    return {"active": active, "recent": recent, "message": message, "error": error,
            "polling": any(r["state"] == "wave" for r in active)}


def banner() -> dict[str, Any] | None:
    """The roll-out in progress or halted, for the banner of Settings → Messaging."""
    row = plans.active()
    return view(row) if row is not None else None


@bp.get("")
@login_required
def rollouts_page():
    """Every roll-out in progress or halted, with its wave and each service, and the recent ones;
    htmx gets the list alone (it polls itself while a wave is running)."""
    if is_htmx():
        return render_template("settings/_rollouts.html", **rollouts_context())
    return render_template("settings/rollouts.html", **rollouts_context())


@bp.get("/banner")
@login_required
def rollouts_banner():
    """The banner of Settings → Messaging alone (htmx; it follows a save and the wave)."""
    if not is_htmx():
        return redirect(url_for("rollouts.rollouts_page"))
    return render_template("settings/_waves_banner.html", waves_banner=banner())


def _answer(message: str | None, error: str | None, status: int):
    if is_htmx():
        return render_template("settings/_rollouts.html",
                               **rollouts_context(message, error)), status
    if error is None:
        flash(message or "Done.")
        return redirect(url_for("rollouts.rollouts_page"))
    return render_template("settings/rollouts.html", **rollouts_context(message, error)), status


@bp.post("/<int:rollout_id>/resume")
@admin_required
def resume_rollout(rollout_id: int):
    row = plans.find(rollout_id)
    if row is None:
        return _answer(None, f"There is no roll-out {rollout_id}.", 404)
    if not confirmed():
        return confirmation(f"Resume the roll-out of v{row.version}?",
                            f"The first wave ({', '.join(row.wave or []) or 'no service'}) gets "
                            f"{row.deadline_seconds} s again to acknowledge applied v{row.version}; "
                            f"the other services stay on v{row.from_version} until it has.",
                            "Resume", url_for("rollouts.rollouts_page"), "Roll-outs")
    try:
        state = waves.resume(row, actor=actor() or "unknown")
    except plans.PlanInvalid as exc:
        return _answer(None, "Not resumed: " + " ".join(exc.errors.values()), 409)
    if state == "halted":       # a service of the wave still acknowledges the version failed
        return _answer(None, f"Resumed, and halted again at once: {row.reason}. Fix the service "
                             f"and have it apply v{row.version} again, or roll back.", 409)
    return _answer(f"Roll-out of v{row.version} resumed"
                   + (": the whole first wave had applied it, so every service gets it now."
                      if state == "released" else
                      f": the first wave has {row.deadline_seconds} s again."), None, 200)


@bp.post("/<int:rollout_id>/rollback")
@admin_required
def rollback_rollout(rollout_id: int):
    row = plans.find(rollout_id)
    if row is None:
        return _answer(None, f"There is no roll-out {rollout_id}.", 404)
    if not confirmed():
        return confirmation(f"Roll back the roll-out of v{row.version}?",
                            f"The configuration of v{row.from_version}, the last version every "
                            f"service applied, becomes the configuration again (a new version), and "
                            f"every service is served it; the roll-out of v{row.version} ends.",
                            "Roll back", url_for("rollouts.rollouts_page"), "Roll-outs")
    try:
        outcome = rollback_service.rollback(row, actor=actor() or "unknown", origin="page")
    except plans.PlanInvalid as exc:
        return _answer(None, "Not rolled back: " + " ".join(exc.errors.values()), 409)
    made = f" as v{outcome.version_id}" if outcome.version_id else ""
    return _answer(f"Rolled back: the configuration of v{row.from_version} is in effect again{made}.",
                   None, 200)
