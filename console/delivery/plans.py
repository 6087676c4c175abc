"""Roll-outs in waves: which version each service is served while a change rolls out.

A change may carry a plan (`propose()` before the change pipeline commits it): a first wave — named
services and/or a share of all of them — gets the new version first; every other service keeps being
served the version it was on (`snapshot_for`) until every service of the wave has acknowledged
`applied` within the deadline. Then the roll-out is *released* and the others get the newest
version. A `failed` acknowledgement from the wave or a missed deadline *halts* it: the services not
yet reached stay where they are until an admin resumes (the wave is given the deadline again) or rolls
back (the settings layer commits the configuration of `from_version` again; automatic per plan). The
state lives in the `rollouts` table, deadlines are checked by the delivery worker on every round, so
a console restarted mid roll-out carries on. Without a plan, every service gets a change at once.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

from flask import g, has_app_context
from sqlalchemy import update

from ..audit import audit
from ..extensions import db
from ..messaging.effective import Snapshot
from ..messaging.state import State
from ..models import ConfigVersion, ExtensionService, Rollout, utcnow

ACTIVE = ("wave", "halted")
DEFAULT_DEADLINE = 300
MAX_DEADLINE = 7 * 24 * 3600
_PROPOSED = "console_rollout_plan"


@dataclass
class Plan:
    """What an admin asks of a change's roll-out."""

    wave: list[str] = field(default_factory=list)
    share: int | None = None
    deadline: int = DEFAULT_DEADLINE
    auto_rollback: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"wave": list(self.wave), "share": self.share, "deadline": self.deadline,
                "auto_rollback": self.auto_rollback}


class PlanInvalid(ValueError):
    """A plan that cannot be used; `errors` maps `rollout.<field>` to a message."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def _names(raw: Any) -> list[str] | None:
    if isinstance(raw, str):
        raw = [part for part in raw.replace("\n", ",").split(",")]
    if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
        return None
    return [n.strip() for n in raw if n.strip()]


def _whole(raw: Any) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.strip().isdigit() and len(raw.strip()) < 10:
        return int(raw.strip())
    return None


def parse(raw: Any) -> Plan | None:
    """A plan from JSON, YAML or a form (`None` or an empty mapping: no plan); PlanInvalid names
    every field that is wrong. Wave names must be registered services."""
    if raw is None or raw == {}:
        return None
    if not isinstance(raw, dict):
        raise PlanInvalid({"rollout": 'Give the plan as {"wave": [service, …], "share": 10, '
                                      '"deadline": 300, "auto_rollback": false}.'})
    errors: dict[str, str] = {}
    unknown = sorted(set(raw) - {"wave", "share", "deadline", "auto_rollback"})
    if unknown:
        errors["rollout"] = f"Unknown plan field(s): {', '.join(unknown)}."
    wave = _names(raw.get("wave") or [])
    if wave is None:
        errors["rollout.wave"] = "List the services of the first wave by name."
        wave = []
    elif wave:
        known = set(db.session.execute(db.select(ExtensionService.name)
                                       .where(ExtensionService.name.in_(wave))).scalars())
        missing = [n for n in wave if n not in known]
        if missing:
            errors["rollout.wave"] = f"No registered service named {', '.join(missing)}."
    share = raw.get("share")
    if share in (None, ""):
        share = None
    else:
        share = _whole(share)
        if share is None or not 1 <= share <= 100:
            errors["rollout.share"] = "Give the share of services in the first wave as 1–100 (%)."
    deadline = raw.get("deadline", DEFAULT_DEADLINE)
    deadline = DEFAULT_DEADLINE if deadline in (None, "") else _whole(deadline)
    if deadline is None or not 1 <= deadline <= MAX_DEADLINE:
        errors["rollout.deadline"] = (f"Give the wave's deadline in seconds, 1–{MAX_DEADLINE}.")
    auto = raw.get("auto_rollback", False)
    if isinstance(auto, str):
        word = auto.strip().lower()
        auto = (True if word in ("1", "true", "yes", "on")
                else False if word in ("", "0", "false", "no", "off") else auto)
    if not isinstance(auto, bool):
        errors["rollout.auto_rollback"] = "Say true or false."
    if not wave and share is None and "rollout.wave" not in errors:
        errors["rollout.wave"] = "Name the services of the first wave, or give a share of them."
    if errors:
        raise PlanInvalid(errors)
    assert deadline is not None
    return Plan(wave=wave, share=share, deadline=deadline, auto_rollback=bool(auto))


def propose(plan: Plan | None) -> None:
    """Give the change this request (app context) commits next the roll-out plan `plan`."""
    if plan is None:
        g.pop(_PROPOSED, None)
    else:
        setattr(g, _PROPOSED, plan)


def proposed() -> Plan | None:
    """The plan the next change of this app context will roll out with."""
    return g.get(_PROPOSED) if has_app_context() else None


def wave_of(plan: Plan, names: list[str]) -> list[str]:
    """The first wave: the named services plus, for a share, the first services by name (a share
    of at least one service), so that every replica picks the same ones."""
    chosen = [n for n in plan.wave if n in names]
    if plan.share:
        count = max(1, math.ceil(len(names) * plan.share / 100))
        for name in sorted(names):
            if len(chosen) >= count:
                break
            if name not in chosen:
                chosen.append(name)
    return chosen


def service_names() -> list[str]:
    """Every registered service, by name."""
    return list(db.session.execute(db.select(ExtensionService.name)
                                   .order_by(ExtensionService.name)).scalars())


def preview(plan: Plan | None) -> dict[str, Any] | None:
    """The plan as the impact preview shows it: who gets the change first, and who waits."""
    if plan is None:
        return None
    names = service_names()
    wave = wave_of(plan, names)
    later = [n for n in names if n not in wave]
    return {**plan.as_dict(), "first_wave": wave, "later": later,
            "text": describe(wave, later, plan.deadline, plan.auto_rollback)}


def describe(wave: list[str], later: list[str], deadline: int, auto: bool) -> str:
    return (f"First wave: {', '.join(wave) or 'no service'}; the other {len(later)} service(s) get it "
            f"once every service of the wave acknowledged applied within {deadline} s"
            + ("; rolled back automatically if it halts." if auto else "; halts if it does not."))


# --- the roll-out in progress -------------------------------------------------------------------

def active() -> Rollout | None:
    """The roll-out in progress (in its wave or halted), if any."""
    return db.session.execute(db.select(Rollout).where(Rollout.state.in_(ACTIVE))
                              .order_by(Rollout.id.desc()).limit(1)).scalar_one_or_none()


def latest() -> Rollout | None:
    """The newest roll-out, whatever its state."""
    return db.session.execute(db.select(Rollout).order_by(Rollout.id.desc()).limit(1)
                              ).scalar_one_or_none()


def find(rollout_id: int) -> Rollout | None:
    return db.session.get(Rollout, rollout_id)


def _version_snapshot(version: int) -> Snapshot | None:
    memo = g.setdefault("console_rollout_snapshots", {}) if has_app_context() else {}
    if version not in memo:
        row = db.session.get(ConfigVersion, version)
        memo[version] = Snapshot(State.from_json(row.state)) if row is not None else None
    return memo[version]


def held(row: ExtensionService, rollout: Rollout | None) -> bool:
    """Whether `rollout` keeps `row` on the version it was on."""
    return rollout is not None and rollout.state in ACTIVE and row.name not in (rollout.wave or [])


def snapshot_for(row: ExtensionService, snapshot: Snapshot, version: int | None,
                 rollout: Rollout | None = None, *, look: bool = True
                 ) -> tuple[Snapshot, int | None]:
    """The configuration `row` is served — the one function that decides it for the callbacks, the
    fetch and the watch: `snapshot` (the newest, as `version`) unless a roll-out in progress holds
    the service back, then the version it was on. `rollout`: the active one when the caller looked
    it up already (`look=False` then trusts it)."""
    if look and rollout is None:
        rollout = active()
    if held(row, rollout):
        assert rollout is not None
        old = _version_snapshot(rollout.from_version)
        if old is not None:
            return old, rollout.from_version
    return snapshot, version


def begin(version: int, actor: str) -> Rollout | None:
    """In the transaction of the change that wrote `version`: start the roll-out of the plan this
    request proposed (none: nothing). A roll-out still in progress is superseded by the new one,
    whose held services stay on the version the old one held them on."""
    plan = proposed()
    if plan is None:
        return None
    propose(None)
    names = list(db.session.execute(db.select(ExtensionService.name)).scalars())
    previous = active()
    if previous is not None:
        from_version = previous.from_version
        previous.state, previous.finished_at = "superseded", utcnow()
        previous.reason = f"Superseded by the roll-out of v{version}"
    else:
        from_version = db.session.execute(db.select(db.func.max(ConfigVersion.id))
                                          .where(ConfigVersion.id < version)).scalar() or version
    now = utcnow()
    wave = wave_of(plan, names)
    row = Rollout(version=version, from_version=from_version, wave=wave, share=plan.share,
                  deadline_seconds=plan.deadline, auto_rollback=plan.auto_rollback, state="wave",
                  actor=actor[:80], created_at=now,
                  deadline_at=now + dt.timedelta(seconds=plan.deadline))
    db.session.add(row)
    db.session.flush()
    audit("rollout_started", "applied", actor=actor, origin="rollout", version_id=version,
          summary=f"Roll-out of v{version} in waves: "
                  + describe(wave, [n for n in names if n not in wave], plan.deadline,
                             plan.auto_rollback))
    return row


def wave_rows(rollout: Rollout) -> list[ExtensionService]:
    return list(db.session.execute(db.select(ExtensionService).where(
        ExtensionService.name.in_(rollout.wave or []))).scalars())



def applied(row: ExtensionService) -> bool:
    return (row.config_etag is not None and row.acked_etag == row.config_etag
            and row.ack_status == "applied")



def failed(row: ExtensionService) -> bool:
    return (row.config_etag is not None and row.acked_etag == row.config_etag
            and row.ack_status == "failed")



def set_state(rollout: Rollout, frm: tuple[str, ...], to: str, **values: Any) -> bool:
    """One conditional UPDATE, so that one replica (one request) moves a roll-out."""
    done = db.session.execute(update(Rollout).where(Rollout.id == rollout.id,
                                                    Rollout.state.in_(frm))
                              .values(state=to, **values)
                              .execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
    if done == 1:
        db.session.refresh(rollout)
    return done == 1



def mark_rolled_back(rollout: Rollout, *, actor: str, version: int | None = None) -> bool:
    """In the transaction of the rollback change: the roll-out ends, nobody is held back."""
    if not set_state(rollout, ACTIVE, "rolled_back", finished_at=utcnow()):
        return False
    audit("rollout_rolled_back", "applied", actor=actor, origin="rollout",
          version_id=rollout.version,
          summary=f"Roll-out of v{rollout.version} rolled back to the configuration of "
                  f"v{rollout.from_version}, the last version every service applied")
    return True


def document(rollout: Rollout | None) -> dict[str, Any] | None:
    """A roll-out as the API and the page show it."""
    if rollout is None:
        return None
    rows = list(db.session.execute(db.select(ExtensionService)
                                   .order_by(ExtensionService.name)).scalars())
    services = []
    for r in rows:
        in_wave = r.name in (rollout.wave or [])
        if rollout.state in ACTIVE and not in_wave:
            state = "held"
        elif applied(r):
            state = "applied"
        elif failed(r):
            state = "failed"
        else:
            state = "pending"
        services.append({"name": r.name, "wave": 1 if in_wave else 2, "state": state,
                         "serving_version": r.config_version, "acked_version": r.acked_version,
                         "ack_status": r.ack_status, "ack_message": r.ack_message,
                         "diagnosis": r.ack_diagnosis if state == "failed" else None})
    held_names = [s["name"] for s in services if s["state"] == "held"]
    text = {"wave": f"First wave of v{rollout.version} in progress: "
                    f"{', '.join(rollout.wave) or 'no service'}",
            "halted": f"Halted: {rollout.reason}",
            "released": f"Released: every service gets v{rollout.version} or newer",
            "rolled_back": f"Rolled back to the configuration of v{rollout.from_version}",
            "superseded": rollout.reason or "Superseded"}.get(rollout.state, rollout.state)
    iso = _iso
    return {"id": rollout.id, "version": rollout.version, "from_version": rollout.from_version,
            "state": rollout.state, "halted": rollout.state == "halted", "reason": rollout.reason,
            "wave": list(rollout.wave or []), "share": rollout.share,
            "deadline": rollout.deadline_seconds, "deadline_at": iso(rollout.deadline_at),
            "auto_rollback": rollout.auto_rollback, "actor": rollout.actor,
            "created_at": iso(rollout.created_at), "halted_at": iso(rollout.halted_at),
            "finished_at": iso(rollout.finished_at), "held": held_names, "services": services,
            "text": text}


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None
