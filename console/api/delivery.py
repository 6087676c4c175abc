"""API: configuration delivery — a service's configuration document (ETag, 304), its
acknowledgements, roll-out state and adapters' configuration."""
from __future__ import annotations

from flask import jsonify, request

from .. import audit as audit_log
from ..adapters import service as registry
from ..auth import actor, service_token
from ..delivery import documents, outbox, plans, waves
from ..delivery import status as rollout
from ..extensions import db
from ..messaging.effective import current
from . import _error, bp, forbidden_service, not_modified
from .registry import service_document


def _service_or_404(name: str):
    row = registry.find_service(name)
    if row is None:
        return None, _error(404, "not_found", f"No registered service named {name!r}. Register it "
                                              "first: POST /api/v1/services.")
    return row, None


@bp.get("/services/<name>/config")
def service_config(name: str):
    own = service_token() is not None
    row, missing = _service_or_404(name)
    if missing:
        return missing
    if row.config_etag is None:      # registered before delivery existed: record its document now
        outbox.refresh(current(), services=[row])
        db.session.commit()
    tag = row.config_etag + ("" if own else documents.MASKED_SUFFIX)
    if rollout.etag_matches(request.headers.get("If-None-Match"), tag):
        if own and rollout.record_fetch(row, request.remote_addr):
            db.session.commit()
        return not_modified(tag)
    snap, _ = plans.snapshot_for(row, current(), row.config_version)   # a roll-out may hold it back
    content = documents.content(snap, row, reveal=own)
    if own:
        etag = documents.etag_of(content)
        if etag != row.config_etag:      # the environment of this process differs: say what it serves
            row.config_etag = etag
        tag = etag
    body = {"service": row.name, "version": row.config_version, "etag": tag, **content}
    if own:
        rollout.record_fetch(row, request.remote_addr)
        audit_log.audit("read_config", "applied", actor=actor(), origin="api",
                         protocols=list(content["brokers"]),
                         summary=f"Service {row.name} read its configuration v{row.config_version} "
                                 f"(secrets included) from {request.remote_addr}")
        db.session.commit()
    response = jsonify(body)
    response.set_etag(tag)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/services/<name>/ack")
def service_ack(name: str):
    row, missing = _service_or_404(name)
    if missing:
        return missing
    if service_token() is None:
        return _error(403, "forbidden", "Acknowledgements come from the service's own token "
                                        "(tokens create NAME --role service --service SERVICE).")
    body = request.get_json(silent=True)
    errors: dict[str, str] = {}
    if not isinstance(body, dict):
        return _error(400, "bad_request", 'Send {"version": 12, "status": "applied"|"failed", '
                                          '"message": …}.')
    version = body.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version < 2**31:
        errors["version"] = "Give the version the service runs now, a whole number."
    if body.get("status") not in ("applied", "failed"):
        errors["status"] = "Say applied or failed."
    message = body.get("message", "")
    if message is None:
        message = ""
    if not isinstance(message, str) or len(message) > 2000:
        errors["message"] = "Give the message as text of at most 2000 characters."
    if errors:
        return _error(422, "invalid", "The acknowledgement was not recorded.", errors=errors)
    assert isinstance(version, int)
    rollout.record_ack(row, version, body["status"], message)
    db.session.commit()
    waves.on_ack(row)        # the first wave of a roll-out: released, or halted
    return jsonify(rollout.service_state(row))


@bp.get("/services/<name>")
def service_status(name: str):
    row, missing = _service_or_404(name)
    if missing:
        return missing
    return jsonify(service_document(row))


@bp.delete("/services/<name>")
def delete_service(name: str):
    row, missing = _service_or_404(name)
    if missing:
        return missing
    try:
        registry.delete_service(name, actor(), "api")
    except registry.RegistryError as exc:
        return _error(409, "conflict", "The service was not deleted.", errors=exc.errors)
    return jsonify(deleted=name)


@bp.get("/rollout")
def rollout_status():
    version = request.args.get("version", type=int)
    return jsonify(rollout.rollout(version))


@bp.get("/adapters/<name>/config")
def adapter_config(name: str):
    adapter = registry.find_adapter(name)
    if adapter is None:
        return _error(404, "not_found", f"No adapter named {name!r}.")
    token = service_token()
    if token is not None:
        service = registry.find_service(token.service or "")
        if service is None or service.id != adapter.service_id:
            return forbidden_service()
    document = registry.adapter_config(adapter, reveal=token is not None)
    if token is not None:
        audit_log.audit("read_config", "applied", actor=actor(), origin="api",
                         protocols=[adapter.protocol],
                         summary=f"Adapter {adapter.name} configuration read (secrets included) "
                                 f"from {request.remote_addr}")
        db.session.commit()
    response = jsonify(document)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/adapters/<name>/migrate")
def migrate_adapter(name: str):
    try:
        adapter, selection = registry.migrate_adapter(name, actor(), "api")
    except registry.RegistryError as exc:
        status = 404 if "name" in exc.errors else 422
        return _error(status, "not_found" if status == 404 else "invalid",
                      "The adapter was not migrated.", errors=exc.errors)
    return jsonify({**registry.adapter_config(adapter, reveal=False), "reason": selection.reason})


@bp.delete("/adapters/<name>")
def delete_adapter(name: str):
    try:
        registry.delete_adapter(name, actor(), "api")
    except registry.RegistryError as exc:
        return _error(404, "not_found", "The adapter was not deleted.", errors=exc.errors)
    return jsonify(deleted=name)
