"""API: roll-outs in waves — the one in progress (or the newest), resume, and the one-action
rollback to the last version every service applied."""
from __future__ import annotations

from flask import jsonify

from ..auth import actor
from ..delivery import plans, waves
from ..models import Rollout
from ..settings import rollouts as settings_rollouts
from . import _error, bp


def _rollout_or_404(rollout_id: int) -> tuple[Rollout | None, object]:
    row = plans.find(rollout_id)
    if row is None:
        return None, _error(404, "not_found", f"No roll-out {rollout_id}.")
    return row, None


@bp.get("/rollouts/current")
def current_rollout():
    """The roll-out in progress, else the newest one (`null` when there has been none)."""
    return jsonify(rollout=plans.document(plans.active() or plans.latest()))


@bp.get("/rollouts/<int:rollout_id>")
def get_rollout(rollout_id: int):
    row, missing = _rollout_or_404(rollout_id)
    if missing:
        return missing
    return jsonify(rollout=plans.document(row))


@bp.post("/rollouts/<int:rollout_id>/resume")
def resume_rollout(rollout_id: int):
    row, missing = _rollout_or_404(rollout_id)
    if missing:
        return missing
    assert row is not None
    try:
        waves.resume(row, actor=actor() or "unknown")
    except plans.PlanInvalid as exc:
        return _error(409, "conflict", "The roll-out was not resumed.", errors=exc.errors)
    return jsonify(rollout=plans.document(plans.find(rollout_id)))


@bp.post("/rollouts/<int:rollout_id>/rollback")
def rollback_rollout(rollout_id: int):
    row, missing = _rollout_or_404(rollout_id)
    if missing:
        return missing
    assert row is not None
    try:
        outcome = settings_rollouts.rollback(row, actor=actor() or "unknown", origin="api")
    except plans.PlanInvalid as exc:
        return _error(409, "conflict", "The roll-out was not rolled back.", errors=exc.errors)
    return jsonify(rollout=plans.document(plans.find(rollout_id)), version=outcome.version_id)
