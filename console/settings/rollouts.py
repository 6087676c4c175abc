"""Rolling back a roll-out in waves: one action makes the configuration of the version every
service applied (the one the services not yet reached still run) the configuration again, through
the change pipeline, and ends the roll-out — by an admin, or automatically when a halted roll-out's
plan says so (on the `rollout_halted` signal)."""
from __future__ import annotations

import logging
from typing import Any

from .. import signals
from ..delivery import outbox, plans
from ..extensions import db
from ..messaging.effective import current
from ..models import Rollout
from . import changes as pipeline
from . import transfer

log = logging.getLogger(__name__)


def rollback(rollout: Rollout, *, actor: str, origin: str) -> pipeline.Outcome:
    """Roll `rollout` back to the configuration of its `from_version` (PlanInvalid when it is not in
    progress any more). Every service is then served that configuration again."""
    if rollout.state not in plans.ACTIVE:
        raise plans.PlanInvalid({"rollout": f"The roll-out of v{rollout.version} is "
                                            f"{rollout.state}: there is nothing to roll back."})
    target = transfer.version(rollout.from_version)
    if target is None:
        raise plans.PlanInvalid({"rollout": f"Version {rollout.from_version} is not stored."})
    plans.propose(None)
    if not plans.mark_rolled_back(rollout, actor=actor):
        db.session.rollback()
        raise plans.PlanInvalid({"rollout": "The roll-out moved on meanwhile; reload it."})
    outcome = transfer.rollback(rollout.from_version, actor=actor, origin=origin, confirm=True)
    assert outcome is not None
    if outcome.status != "applied":       # the configuration is that version's already
        outbox.refresh(current(), outbox.current_version())
        db.session.commit()
        outbox.wake()
    outcome.rollout = plans.document(rollout)
    return outcome


def _on_halted(sender: Any, *, rollout: dict[str, Any], **_: Any) -> None:
    if not rollout.get("auto_rollback"):
        return
    row = plans.find(rollout["id"])
    if row is None or row.state != "halted":
        return
    try:
        rollback(row, actor="console", origin="rollout")
    except plans.PlanInvalid as exc:       # another replica (or an admin) was first
        log.info("Automatic rollback of v%s skipped: %s", rollout["version"], exc)


def init_app(app: Any) -> None:
    """Roll back halted roll-outs whose plan says so."""
    signals.rollout_halted.connect(_on_halted, weak=False)
