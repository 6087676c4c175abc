"""Diagnose from where the service runs, on request: an admin asks (page or API), the service's agent
is told in a header of its configuration answers (`Console-Diagnose: <request>`, its held watch ends at
once), runs the network steps (DNS → TCP → TLS) from its own host against the nodes it was given, and
sends them back; they are kept beside the console's own newest check of that protocol. A failed
acknowledgement carries the same steps unasked (status.record_ack)."""
from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from .. import audit as audit_log
from ..models import BrokerCheck, ExtensionService, utcnow
from . import status as rollout
from . import watch

# after this long without an answer the page says the service has not answered (the request stays)
PATIENCE = dt.timedelta(seconds=60)


class NotPending(Exception):
    """Steps sent for a request that is not the service's pending one (answered, or never made)."""


def console_side(check: BrokerCheck | None) -> dict[str, Any] | None:
    """The console's own newest check of a protocol, as it is kept beside an agent's steps."""
    if check is None:
        return None
    return {"status": check.status, "cause": check.cause, "target": check.target,
            "latency_ms": check.latency_ms, "checked_at": check.checked_at.isoformat(timespec="seconds"),
            "nodes": [{"node": n.get("node"), "status": n.get("status"), "cause": n.get("cause")}
                      for n in check.nodes or [] if isinstance(n, dict)]}


def beside(service: str, agent: dict[str, Any], check: BrokerCheck | None) -> dict[str, Any]:
    """The agent's steps beside the console's check, with the sentence that compares them."""
    console = console_side(check)
    return {"agent": agent, "console": console,
            "summary": rollout.diagnosis_summary(service, agent, console)}


def request(row: ExtensionService, actor: str, origin: str) -> str:
    """Ask `row`'s agent for the network steps (the caller commits): a new request replaces a pending
    one; the service's held watches are answered when the transaction commits."""
    row.diagnosis_request = secrets.token_hex(8)
    row.diagnosis_requested_at = utcnow()
    row.diagnosis_requested_by = actor[:120]
    watch.changed()
    audit_log.audit("agent_diagnosis_requested", "applied", actor=actor, origin=origin,
                    protocols=list(row.protocols or []),
                    summary=f"Asked {row.name} to run the network steps of a diagnosis from its own host")
    return row.diagnosis_request


def receive(row: ExtensionService, request_id: str, agent: dict[str, Any], check: BrokerCheck | None,
            actor: str) -> dict[str, Any]:
    """Keep the steps `row`'s agent ran for `request_id` (the caller commits); NotPending when that is
    not the pending request."""
    if not row.diagnosis_request or request_id != row.diagnosis_request:
        raise NotPending(request_id)
    kept = {**beside(row.name, agent, check), "request": request_id,
            "requested_by": row.diagnosis_requested_by,
            "requested_at": rollout.iso(row.diagnosis_requested_at), "received_at": rollout.iso(utcnow())}
    row.requested_diagnosis = kept
    row.diagnosis_request = None
    audit_log.audit("agent_diagnosis_received", "applied", actor=actor, origin="api",
                    protocols=[agent["protocol"]], summary=kept["summary"])
    return kept


def pending(row: ExtensionService, now: dt.datetime | None = None) -> dict[str, Any] | None:
    """The pending request as pages and the API show it: its id, who asked when, and whether the
    service has kept it waiting longer than it should."""
    if not row.diagnosis_request:
        return None
    asked = row.diagnosis_requested_at
    late = asked is not None and (now or utcnow()) - asked > PATIENCE
    return {"request": row.diagnosis_request, "requested_at": rollout.iso(asked),
            "requested_by": row.diagnosis_requested_by, "late": late}


def tell(row: ExtensionService, own: bool, headers: Any) -> None:
    """Put the pending request on a configuration answer to the service's own token."""
    if own and row.diagnosis_request:
        headers[watch.DIAGNOSE_HEADER] = row.diagnosis_request
