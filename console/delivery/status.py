"""Roll-out state: per service, the version it should run, what it fetched and acknowledged, and
where its callback stands; and the summary of one version's roll-out over all services."""
from __future__ import annotations

import datetime as dt
import json
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update

from ..brokers import PROTOCOLS
from ..brokers.base import CAUSES
from ..extensions import db
from ..models import ApiToken, Delivery, ExtensionService, utcnow

FETCH_RECORD_EVERY = dt.timedelta(seconds=10)
TOKEN_USED_EVERY = dt.timedelta(seconds=60)


def iso(value: dt.datetime | None) -> str | None:
    """A stored time as the API and pages give it (the columns are timezone-aware UTC)."""
    return value.isoformat(timespec="seconds") if value else None


def latest_deliveries(service_ids: list[int] | None = None) -> dict[int, Delivery]:
    """The newest delivery of each service (one query)."""
    newest = db.select(db.func.max(Delivery.id)).group_by(Delivery.service_id)
    if service_ids is not None:
        newest = newest.where(Delivery.service_id.in_(service_ids))
    rows = db.session.execute(db.select(Delivery).where(Delivery.id.in_(newest))).scalars()
    return {d.service_id: d for d in rows}


def delivery_state(item: Delivery | None) -> dict[str, Any]:
    """pending, retrying (with the last error), delivered, failed, or none."""
    if item is None:
        return {"state": "none"}
    state = item.state
    if state == "pending" and item.attempts:
        state = "retrying"
    out: dict[str, Any] = {"state": state, "version": item.version, "attempts": item.attempts,
                           "created_at": iso(item.created_at)}
    if item.last_error:
        out["last_error"] = item.last_error
    if state in ("pending", "retrying"):
        out["next_attempt_at"] = iso(item.due_at)
    if item.finished_at:
        out["finished_at"] = iso(item.finished_at)
    return out


def service_state(row: ExtensionService, delivery: Delivery | None = None) -> dict[str, Any]:
    """Where one service stands: applied, failed, fetched (not acknowledged yet), or pending."""
    current = row.config_etag is not None
    if current and row.acked_etag == row.config_etag and row.ack_status == "applied":
        state = "applied"
    elif current and row.acked_etag == row.config_etag and row.ack_status == "failed":
        state = "failed"
    elif current and row.fetched_etag == row.config_etag:
        state = "fetched"
    else:
        state = "pending"
    return {
        "name": row.name, "state": state,
        "target": {"version": row.config_version, "etag": row.config_etag},
        "fetched": {"version": row.fetched_version, "at": iso(row.fetched_at),
                    "from": row.fetched_from, "current": current and row.fetched_etag == row.config_etag},
        "acknowledged": {"version": row.acked_version, "status": row.ack_status,
                         "message": row.ack_message, "at": iso(row.acked_at),
                         "diagnosis": row.ack_diagnosis,
                         "current": current and row.acked_etag == row.config_etag},
        "callback": bool(row.callback_url),
        "delivery": delivery_state(delivery),
    }


def _shown_time(value: str | None) -> str:
    return (value or "").replace("T", " ").replace("+00:00", " UTC")


def _waits_for_fetch(s: dict[str, Any]) -> bool:
    """A service that only polls (no callback) and has not fetched what it should run: nothing the
    console does moves it on, so the roll-out waits for it (no spinner for it)."""
    return s["state"] == "pending" and not s["callback"]


def _waiting_text(s: dict[str, Any]) -> str:
    fetched = s["fetched"]
    when = (f"last fetched v{fetched['version']} at {_shown_time(fetched['at'])}"
            if fetched["at"] else "it has never fetched")
    return f"waiting for {s['name']} to fetch ({when})"


def rollout(version: int | None = None) -> dict[str, Any]:
    """The roll-out of `version` (default: the newest any service should run) over all services.
    `text` names every service that holds it up, with its failure; `headline` the same without the
    failure texts, for pages that show each service's own row (where its failure text is, once).
    `settled`: every service applied or failed (or its callback gave up); `waiting`: not settled,
    but only services that poll and have not fetched hold it up (nothing to spin for)."""
    rows = list(db.session.execute(db.select(ExtensionService)
                                   .order_by(ExtensionService.name)).scalars())
    deliveries = latest_deliveries()
    states = [service_state(r, deliveries.get(r.id)) for r in rows]
    if version is None:
        version = max((r.config_version or 0 for r in rows), default=0)
    counts = {"applied": 0, "failed": 0, "fetched": 0, "pending": 0}
    for s in states:
        counts[s["state"]] += 1
    total = len(states)
    noun = "service" if total == 1 else "services"
    head = [f"{counts['applied']} of {total} {noun} applied v{version}"] if total else [
        "No services are registered"]
    parts, short = list(head), list(head)
    for s in states:
        if s["state"] == "failed":
            parts.append(f"{s['name']} failed: {s['acknowledged']['message'] or 'no reason given'}")
            short.append(f"{s['name']} failed")
        elif s["delivery"]["state"] in ("retrying", "failed"):
            parts.append(f"{s['name']}: callback {s['delivery']['state']}"
                         f" ({s['delivery'].get('last_error', '')})")
            short.append(f"{s['name']}: callback {s['delivery']['state']}")
        elif _waits_for_fetch(s):
            parts.append(_waiting_text(s))
            short.append(_waiting_text(s))
    done = [s["state"] in ("applied", "failed") or s["delivery"]["state"] == "failed" for s in states]
    settled = all(done)
    waiting = not settled and all(d or _waits_for_fetch(s) for d, s in zip(done, states, strict=True))
    return {"version": version, "services": states, "counts": counts, "total": total,
            "text": " · ".join(parts), "headline": " · ".join(short), "settled": settled,
            "waiting": waiting}


def etag_matches(header: str | None, etag: str | None) -> bool:
    """Whether an If-None-Match header names `etag`."""
    if not header or not etag:
        return False
    if header.strip() == "*":
        return True
    return etag in [t.strip().removeprefix("W/").strip('"') for t in header.split(",")]


def not_modified(token_digest: str, name: str, header: str | None,
                 remote: str | None) -> str | None:
    """The ETag to answer 304 with when a service's own token asks with an If-None-Match that names
    its current document, else None (the full path then answers). One light query for the token and
    the service together — nothing resolved, nothing decrypted; the fetch and the token's use are
    recorded at most every few seconds."""
    if not header:
        return None
    tokens, services = cast(Table, ApiToken.__table__), cast(Table, ExtensionService.__table__)
    row = db.session.execute(_CONDITIONAL_FETCH, {"digest": token_digest, "name": name}).first()
    if row is None or not etag_matches(header, row.config_etag) or row.diagnosis_request:
        return None     # a diagnosis asked of it: the view's answer says so
    now = utcnow()
    if (row.fetched_etag != row.config_etag or row.fetched_at is None
            or now - _aware(row.fetched_at) >= FETCH_RECORD_EVERY):
        db.session.execute(update(services).where(services.c.id == row.id).values(
            fetched_version=row.config_version, fetched_etag=row.config_etag, fetched_at=now,
            fetched_from=(remote or "")[:64]))
    if row.last_used_at is None or now - _aware(row.last_used_at) >= TOKEN_USED_EVERY:
        db.session.execute(update(tokens).where(tokens.c.id == row.token_id)
                           .values(last_used_at=now))
    db.session.commit()
    return row.config_etag


def _conditional_fetch():
    tokens, services = cast(Table, ApiToken.__table__), cast(Table, ExtensionService.__table__)
    return (select(tokens.c.id.label("token_id"), tokens.c.last_used_at, services.c.id,
                   services.c.config_etag, services.c.config_version, services.c.fetched_etag,
                   services.c.fetched_at, services.c.diagnosis_request)
            .select_from(tokens.join(services, services.c.name == tokens.c.service))
            .where(tokens.c.digest == bindparam("digest"), tokens.c.role == "service",
                   services.c.name == bindparam("name")))


_CONDITIONAL_FETCH = _conditional_fetch()


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def record_fetch(row: ExtensionService, remote: str | None) -> bool:
    """Note that `row` fetched its current document (throttled when nothing changed); True when a
    write was made (the caller commits)."""
    now = utcnow()
    if (row.fetched_etag == row.config_etag and row.fetched_at is not None
            and now - row.fetched_at < FETCH_RECORD_EVERY):
        return False
    row.fetched_version, row.fetched_etag = row.config_version, row.config_etag
    row.fetched_at, row.fetched_from = now, (remote or "")[:64]
    return True


DIAGNOSIS_MAX_BYTES = 16_000
DIAGNOSIS_STEPS = ("dns", "tcp", "tls")
STEP_STATUSES = ("ok", "failed", "skipped")


def _short(value: Any, limit: int = 300) -> str | None:
    return str(value)[:limit] if isinstance(value, (str, int, float)) and not isinstance(value, bool) \
        else None


def _clean_steps(steps: Any) -> list[dict[str, Any]] | None:
    if not isinstance(steps, list) or len(steps) > len(DIAGNOSIS_STEPS):
        return None
    out = []
    for step in steps:
        if not isinstance(step, dict) or step.get("name") not in DIAGNOSIS_STEPS \
                or step.get("status") not in STEP_STATUSES:
            return None
        clean: dict[str, Any] = {"name": step["name"], "status": step["status"]}
        if isinstance(step.get("ms"), (int, float)) and not isinstance(step.get("ms"), bool):
            clean["ms"] = round(float(step["ms"]), 1)
        if _short(step.get("detail")):
            clean["detail"] = _short(step.get("detail"))
        out.append(clean)
    return out


def clean_diagnosis(value: Any) -> tuple[dict[str, Any] | None, str | None]:
    """An agent's network steps as the console keeps them, or the reason they are refused:
    {"protocol", "ok", "cause" (a cause code of CONTRACT.md), "from", "at", "steps", "nodes": [{"node",
    "ok", "cause", "steps"}], "warnings"}; steps are dns, tcp and tls only."""
    if value is None:
        return None, None
    refused = ("Send the agent's network steps as {\"protocol\", \"ok\", \"cause\", \"steps\": "
               "[{\"name\": \"dns|tcp|tls\", \"status\": \"ok|failed|skipped\"}], \"nodes\": […]} "
               f"of at most {DIAGNOSIS_MAX_BYTES} bytes, with a cause code of the console's.")
    try:
        size = len(json.dumps(value))
    except (TypeError, ValueError):
        return None, refused
    if not isinstance(value, dict) or size > DIAGNOSIS_MAX_BYTES or value.get("protocol") not in PROTOCOLS \
            or value.get("cause") not in CAUSES or not isinstance(value.get("ok"), bool):
        return None, refused
    steps = _clean_steps(value.get("steps", []))
    nodes_in = value.get("nodes", [])
    if steps is None or not isinstance(nodes_in, list) or len(nodes_in) > 32:
        return None, refused
    nodes = []
    for node in nodes_in:
        node_steps = _clean_steps(node.get("steps", [])) if isinstance(node, dict) else None
        if node_steps is None or node.get("cause") not in CAUSES or not _short(node.get("node")):
            return None, refused
        nodes.append({"node": _short(node["node"]), "ok": node.get("ok") is True, "cause": node["cause"],
                      "steps": node_steps})
    warnings = [{"code": "node_unreachable", "node": _short(w.get("node")), "detail": _short(w.get("detail"))}
                for w in value.get("warnings") or [] if isinstance(w, dict)][:32]
    return {"protocol": value["protocol"], "ok": value["ok"], "cause": value["cause"],
            "from": _short(value.get("from"), 120), "at": _short(value.get("at"), 40), "steps": steps,
            "nodes": nodes, "warnings": warnings}, None


def _where(node: dict[str, Any]) -> str:
    failed = [s["name"] for s in node.get("steps", []) if s.get("status") == "failed"]
    return f"{node['cause']}" + (f" at {failed[0].upper()}" if failed else "")


def diagnosis_summary(service: str, agent: dict[str, Any], console: dict[str, Any] | None) -> str:
    """One sentence side by side: "The console reaches 127.0.0.1:11884 (up); edge cannot:
    connection_refused at TCP", with the same cause codes on both sides."""
    if console is None:
        ours = "The console has not checked this protocol yet"
    elif console.get("status") == "up":
        ours = f"The console reaches {console.get('target') or agent['protocol']} (up)"
    else:
        ours = (f"The console cannot reach {console.get('target') or agent['protocol']} either: "
                f"{console.get('cause')}")
    bad = [n for n in agent.get("nodes", []) if not n.get("ok")]
    if agent["ok"]:
        theirs = (f"{service} reaches " + ", ".join(n["node"] for n in agent["nodes"] if n["ok"])
                  + " too (DNS, TCP" + (", TLS" if any(s["name"] == "tls" and s["status"] == "ok"
                                                      for n in agent["nodes"] for s in n["steps"]) else "")
                  + "): the network is not the cause" if agent.get("nodes") else f"{service} ran no step")
        if bad:
            theirs += " (" + ", ".join(f"{n['node']}: {_where(n)}" for n in bad) + ")"
    else:
        theirs = f"{service} cannot: " + ", ".join(f"{n['node']}: {_where(n)}" for n in bad) if bad \
            else f"{service} cannot: {agent['cause']}"
    return f"{ours}; {theirs}."


def record_ack(row: ExtensionService, version: int, status: str, message: str,
               diagnosis: dict[str, Any] | None = None) -> None:
    """Note what the service runs now (the caller commits); `diagnosis`: the agent's network steps and
    the console's own check beside them ({"agent", "console"}), kept until the next acknowledgement."""
    row.acked_version, row.ack_status = version, status
    row.ack_diagnosis = diagnosis
    row.ack_message = message[:2000] if message else None
    row.acked_etag = row.fetched_etag if version == row.fetched_version else (
        row.config_etag if version == row.config_version else None)
    row.acked_at = utcnow()
