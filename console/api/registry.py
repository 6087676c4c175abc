"""API: extension services, adapters and protocol selection for connections."""
from __future__ import annotations

from typing import Any

from flask import jsonify, request

from ..adapters import service as registry
from ..auth import actor, service_token
from ..delivery import diagnosis
from ..delivery import status as rollout
from ..extensions import db
from ..inputs import query_int
from ..messaging.identity import identity
from ..models import Adapter, Delivery, ExtensionService
from . import _error, bp, forbidden_service


def service_document(row: ExtensionService, selection: registry.Selection | None = None,
                     delivery: Delivery | None = None) -> dict[str, Any]:
    """Public JSON of a service: what it supports, gets, and where its roll-out stands."""
    selection = selection or registry.current_selection([row])
    if delivery is None:
        delivery = rollout.latest_deliveries([row.id]).get(row.id)
    return {"name": row.name, "protocols": row.protocols, "protocol": selection.protocol,
            "reason": selection.reason, "registered_at": row.registered_at.isoformat(),
            "callback_url": row.callback_url, "rollout": rollout.service_state(row, delivery),
            "diagnosis_request": diagnosis.pending(row), "requested_diagnosis": row.requested_diagnosis}


def adapter_document(row: Adapter, service_name: str, current: dict[str, Any]) -> dict[str, Any]:
    differences = registry.snapshot_differences(row.snapshot, current[row.protocol])
    return {"name": row.name, "service": service_name, "protocol": row.protocol,
            "snapshot": row.snapshot, "matches_current": not differences,
            "differences": differences, "created_at": row.created_at.isoformat(),
            "created_by": row.created_by}


def _json_body() -> dict[str, Any] | None:
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else None


@bp.post("/services")
def register_service():
    body = _json_body()
    if body is None:
        return _error(400, "bad_request", 'Send {"name": …, "protocols": ["mqtt", "kafka"], '
                                          '"callback_url": …}.')
    token = service_token()
    if token is not None and (body.get("name") or "").strip() != token.service:
        return forbidden_service()
    try:
        done = registry.register_service(
            body.get("name"), body.get("protocols"), actor(), "api",
            **({"callback_url": body["callback_url"]} if "callback_url" in body else {}))
    except registry.RegistryError as exc:
        return _error(422, "invalid", "The service was not registered.", errors=exc.errors)
    doc = service_document(done.service)
    document = {**doc, "service": doc}
    if done.signing_secret:
        document["signing_secret"] = done.signing_secret
    return jsonify(document), 201 if done.created else 200


@bp.get("/services")
def list_services():
    rows = db.session.execute(db.select(ExtensionService).order_by(ExtensionService.name)).scalars()
    settings = registry.effective_all()
    deliveries = rollout.latest_deliveries()
    return jsonify(services=[service_document(r, registry.current_selection([r], settings),
                                              deliveries.get(r.id)) for r in rows],
                   rollout={k: v for k, v in rollout.rollout().items() if k != "services"})


@bp.post("/adapters")
def create_adapter():
    body = _json_body()
    if body is None:
        return _error(400, "bad_request", 'Send {"name": …, "service": …}.')
    try:
        row, selection = registry.create_adapter(body.get("name"), body.get("service"), actor(),
                                                 "api")
    except registry.RegistryError as exc:
        return _error(422, "invalid", "The adapter was not created.", errors=exc.errors)
    current = {row.protocol: row.snapshot}
    return jsonify({**adapter_document(row, body["service"].strip(), current),
                    "reason": selection.reason}), 201


@bp.get("/adapters")
def list_adapters():
    page = query_int(request.args, "page", 1)
    per_page = query_int(request.args, "per_page", 50, 1, 500)
    settings = registry.effective_all()
    current = {p: identity(s) for p, s in settings.items()}
    names = dict(db.session.execute(db.select(ExtensionService.id, ExtensionService.name)).all())
    total = db.session.execute(db.select(db.func.count(Adapter.id))).scalar()
    rows = [(a, names[a.service_id]) for a in db.session.execute(
        db.select(Adapter).order_by(Adapter.name).offset((page - 1) * per_page)
        .limit(per_page)).scalars()]
    return jsonify(adapters=[adapter_document(a, name, current) for a, name in rows],
                   page=page, per_page=per_page, total=total,
                   drift=registry.drift_summary(settings))


@bp.post("/connections/check")
def check_connection():
    body = _json_body()
    names = body.get("services") if body else None
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names):
        return _error(400, "bad_request", 'Send {"services": [two or more service names]}.')
    rows, missing = [], []
    for name in names:
        row = registry.find_service(name.strip())
        (rows.append(row) if row else missing.append(name))
    if missing:
        return _error(422, "invalid", "Unknown services.",
                      errors={"services": f"Not registered: {', '.join(missing)}."})
    selection = registry.current_selection(rows)
    status = 200 if selection.protocol else 409
    return jsonify({"ok": selection.protocol is not None, **selection.as_dict()}), status
