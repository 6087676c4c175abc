"""The audit log page, and the filtered query it shares with the API."""
from __future__ import annotations

import datetime as dt
from typing import Any, Mapping

from flask import Blueprint, request
from flask_login import login_required

from ..extensions import db
from ..htmx import render_page_or_fragment
from ..inputs import query_int
from ..messaging.words import setting_value
from ..models import AuditEntry

bp = Blueprint("audit", __name__)


@bp.app_template_filter("setting_value")
def _setting_value(change: Mapping[str, Any], side: str) -> str:
    """One side ("old" or "new") of a recorded change, worded as the history words it."""
    return setting_value(change.get("protocol"), str(change.get("field")), change.get(side))

FILTERS = ("actor", "origin", "action", "outcome", "protocol", "q", "since", "until")
ORIGINS = ("page", "api", "cli", "import", "env", "console")
OUTCOMES = ("applied", "rejected", "confirmation_required")


def _when(raw: str, name: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"{name} must be a date or time like 2026-11-22 or 2026-11-22T10:00.") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def query_entries(args: Mapping[str, Any]) -> tuple[list[AuditEntry], int, int, int]:
    """Audit entries matching the filters in `args`, newest first: (entries, total, page, per_page)."""
    query = db.select(AuditEntry)
    if args.get("actor"):
        query = query.where(AuditEntry.actor == args["actor"])
    for name, column in (("origin", AuditEntry.origin), ("action", AuditEntry.action),
                         ("outcome", AuditEntry.outcome)):
        if args.get(name):
            query = query.where(column == args[name])
    if args.get("protocol"):
        query = query.where(AuditEntry.protocols.contains(args["protocol"]))
    if args.get("q"):
        query = query.where(AuditEntry.summary.contains(args["q"]))
    if args.get("since"):
        query = query.where(AuditEntry.at >= _when(args["since"], "since"))
    if args.get("until"):
        query = query.where(AuditEntry.at <= _when(args["until"], "until"))
    page = query_int(args, "page", 1)
    per_page = query_int(args, "per_page", 50, 1, 200)
    total = db.session.execute(db.select(db.func.count()).select_from(query.subquery())).scalar_one()
    entries = db.session.execute(query.order_by(AuditEntry.id.desc())
                                 .offset((page - 1) * per_page).limit(per_page)).scalars().all()
    return list(entries), total, page, per_page


@bp.get("/audit")
@login_required
def audit_page():
    error = None
    try:
        entries, total, page, per_page = query_entries(request.args)
    except ValueError as exc:
        entries, total, page, per_page, error = [], 0, 1, 50, str(exc)
    actions = [a for (a,) in db.session.execute(db.select(AuditEntry.action).distinct())]
    return render_page_or_fragment(
        "audit/audit.html", "audit/_entries.html", entries=entries, total=total, page=page,
        per_page=per_page, filters={k: request.args.get(k, "") for k in FILTERS}, error=error,
        actions=sorted(actions), origins=ORIGINS, outcomes=OUTCOMES)
