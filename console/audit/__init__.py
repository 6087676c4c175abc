"""The audit log's writer: who did what, when, from where, with the changes it made. Every layer that
changes something (the settings pipeline, users, tokens, the service registry, deliveries) records
through here; the page and its query live in views.py."""
from __future__ import annotations

from typing import Any, Iterable, Protocol

from flask import has_request_context, request

from ..extensions import db
from ..models import AuditEntry


class Change(Protocol):
    """What an audit entry lists of one change (settings' FieldChange)."""

    def as_dict(self) -> dict[str, Any]: ...


def audit(action: str, outcome: str, *, actor: str | None, origin: str,
          protocols: Iterable[str] | None = None, summary: str = "",
          changes: Iterable[Change] | None = None, version_id: int | None = None,
          extra: list[dict[str, Any]] | None = None) -> AuditEntry:
    """Record an audit entry (the caller commits, or it is committed here when alone)."""
    # as the proxies tell it (CONSOLE_PROXIES), so cut to the column's length
    remote = (request.remote_addr or "")[:64] or None if has_request_context() else None
    entry = AuditEntry(actor=(actor or "unknown")[:80], origin=origin, remote=remote, action=action,
                       outcome=outcome, protocols=",".join(sorted(set(protocols or [])))[:64],
                       summary=summary[:4000],
                       changes=[c.as_dict() for c in (changes or [])] + (extra or []),
                       version_id=version_id)
    db.session.add(entry)
    return entry


def record_rejection(action: str, *, actor: str | None, origin: str, protocol: str | None,
                     errors: dict[str, str]) -> None:
    """Audit a change that validation refused (nothing was saved)."""
    summary = "Rejected: " + "; ".join(f"{k}: {v}" for k, v in errors.items())
    audit(action, "rejected", actor=actor, origin=origin,
          protocols=[protocol] if protocol else [], summary=summary)
    db.session.commit()
