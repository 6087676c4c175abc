"""Roll-outs in waves moving on: released when the whole first wave acknowledged `applied`, halted
on a `failed` acknowledgement or a missed deadline, resumed by an admin. Deadlines are checked by the
delivery worker on every round (in every serving process), so a console restarted mid roll-out carries
on from the state in the database. Releases and halts are audited and announced (console.signals
`rollout_released` / `rollout_halted`) after their commit."""
from __future__ import annotations

import datetime as dt
from typing import Any

from flask import current_app

from .. import signals
from ..audit import audit
from ..extensions import db
from ..messaging.effective import current
from ..models import ExtensionService, Rollout, utcnow
from . import outbox, plans


def evaluate(rollout: Rollout | None = None, *, now: dt.datetime | None = None) -> str | None:
    """Move the roll-out in its wave on: release it when the whole wave applied, halt it on a
    `failed` acknowledgement or a missed deadline. Commits; the new state or None."""
    rollout = rollout or plans.active()
    if rollout is None or rollout.state != "wave":
        return None
    rows = plans.wave_rows(rollout)
    failed = [r for r in rows if plans.failed(r)]
    now = now or utcnow()
    if failed:
        reason = "; ".join(f"{r.name} failed v{r.acked_version}: {r.ack_message or 'no reason given'}"
                           for r in failed)
        return _halt(rollout, reason)
    if all(plans.applied(r) for r in rows):
        return release(rollout, actor="console")
    deadline = rollout.deadline_at if rollout.deadline_at.tzinfo else rollout.deadline_at.replace(
        tzinfo=dt.UTC)
    if now >= deadline:
        late = [r.name for r in rows if not plans.applied(r)]
        return _halt(rollout, f"Deadline missed: {', '.join(late)} did not acknowledge applied "
                              f"v{rollout.version} within {rollout.deadline_seconds} s")
    return None



def _halt(rollout: Rollout, reason: str) -> str | None:
    if not plans.set_state(rollout, ("wave",), "halted", reason=reason[:4000], halted_at=utcnow()):
        db.session.rollback()
        return None
    audit("rollout_halted", "applied", actor="console", origin="rollout",
          version_id=rollout.version,
          summary=f"Roll-out of v{rollout.version} halted: {reason}. Services not yet reached keep "
                  f"v{rollout.from_version}.")
    db.session.commit()
    _announce(signals.rollout_halted, rollout)
    return "halted"



def release(rollout: Rollout, *, actor: str) -> str | None:
    """Every service gets the newest version now (the wave succeeded, or an admin said so)."""
    if not plans.set_state(rollout, plans.ACTIVE, "released", finished_at=utcnow()):
        db.session.rollback()
        return None
    outbox.refresh(current(), outbox.current_version())
    audit("rollout_released", "applied", actor=actor, origin="rollout", version_id=rollout.version,
          summary=f"Roll-out of v{rollout.version} released to every service"
                  + (" (the whole first wave applied it)" if actor == "console" else ""))
    db.session.commit()
    outbox.wake()
    _announce(signals.rollout_released, rollout)
    return "released"



def resume(rollout: Rollout, *, actor: str) -> str:
    """A halted roll-out goes on: the wave gets its deadline again (released at once when the
    wave has applied meanwhile)."""
    if rollout.state != "halted":
        raise plans.PlanInvalid({"rollout": f"The roll-out of v{rollout.version} is {rollout.state}, "
                                      "not halted: there is nothing to resume."})
    now = utcnow()
    if not plans.set_state(rollout, ("halted",), "wave", reason=None, halted_at=None,
                      deadline_at=now + dt.timedelta(seconds=rollout.deadline_seconds)):
        db.session.rollback()
        return rollout.state
    audit("rollout_resumed", "applied", actor=actor, origin="rollout", version_id=rollout.version,
          summary=f"Roll-out of v{rollout.version} resumed: the first wave has "
                  f"{rollout.deadline_seconds} s again")
    db.session.commit()
    return evaluate(rollout, now=now) or "wave"



def check_deadlines() -> int:
    """Halt (or release) every roll-out whose wave's deadline has passed: run by the delivery
    worker of every serving process, so a restarted console carries on. How many moved."""
    now = utcnow()
    due = list(db.session.execute(db.select(Rollout).where(Rollout.state == "wave",
                                                           Rollout.deadline_at <= now)).scalars())
    moved = 0
    for rollout in due:
        if evaluate(rollout, now=now):
            moved += 1
    if not due:
        db.session.rollback()
    return moved



def on_ack(row: ExtensionService) -> str | None:
    """After `row`'s acknowledgement was committed: move the roll-out it belongs to."""
    rollout = plans.active()
    if rollout is None or rollout.state != "wave" or row.name not in (rollout.wave or []):
        return None
    return evaluate(rollout)



def _announce(signal: Any, rollout: Rollout) -> None:
    signal.send(current_app._get_current_object(),  # type: ignore[attr-defined]
                rollout=plans.document(rollout))


def init_app(app: Any) -> None:
    """The delivery worker checks the waves' deadlines on every round."""
    outbox.every_round(check_deadlines)
