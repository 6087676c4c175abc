"""API: audit log, configuration versions (diff, rollback) and YAML export/import."""
from __future__ import annotations

from flask import Response, jsonify, request

from ..audit.views import query_entries
from ..auth import actor
from ..settings import transfer
from . import _error, bp, flag


def _outcome_response(outcome, *, dry_run: bool):
    body = outcome.as_dict()
    if outcome.status == "confirm":
        return _error(409, "confirmation_required",
                      'This change affects existing adapters; nothing was saved. Repeat it with '
                      '"confirm": true to apply it anyway.', impact=body["impact"],
                      changes=body["changes"], rollout=body["rollout"])
    return jsonify(body), 200


@bp.get("/audit")
def audit_log():
    try:
        entries, total, page, per_page = query_entries(request.args)
    except ValueError as exc:
        return _error(400, "bad_request", str(exc))
    return jsonify(entries=[{
        "id": e.id, "at": e.at.isoformat(), "actor": e.actor, "origin": e.origin, "remote": e.remote,
        "action": e.action, "outcome": e.outcome, "protocols": [p for p in e.protocols.split(",") if p],
        "summary": e.summary, "changes": e.changes, "version": e.version_id} for e in entries],
        total=total, page=page, per_page=per_page)


@bp.get("/versions")
def list_versions():
    return jsonify(versions=[{"id": v.id, "created_at": v.created_at.isoformat(), "actor": v.actor,
                              "origin": v.origin, "summary": v.summary}
                             for v in transfer.versions()])


@bp.get("/versions/<int:version_id>/diff")
def diff_versions(version_id: int):
    against = request.args.get("against", type=int)
    if against is None:
        return _error(400, "bad_request", "Give ?against=<version id> to compare with.")
    changes = transfer.version_diff(against, version_id)
    if changes is None:
        return _error(404, "not_found", "No such version.")
    return jsonify(old=against, new=version_id, changes=[c.as_dict() for c in changes])


@bp.post("/versions/<int:version_id>/rollback")
def rollback(version_id: int):
    body = request.get_json(silent=True) or {}
    dry_run, confirm = flag("dry_run", body), flag("confirm", body)
    outcome = transfer.rollback(version_id, actor=actor(), origin="api",
                                confirm=confirm, dry_run=dry_run)
    if outcome is None:
        return _error(404, "not_found", "No such version.")
    response, status = _outcome_response(outcome, dry_run=dry_run)
    if status == 200:
        return jsonify({**response.get_json(),
                        "message": transfer.rollback_message(version_id, outcome)}), 200
    return response, status


@bp.get("/config/export")
def export_config():
    return Response(transfer.export_yaml(), mimetype="application/yaml",
                    headers={"Content-Disposition": "attachment; filename=messaging-console.yaml"})


@bp.post("/config/import")
def import_config():
    upload = request.files.get("file")
    text = upload.read().decode("utf-8", "replace") if upload else request.get_data(as_text=True)
    if not text.strip():
        return _error(400, "bad_request", "Send the YAML as the request body or as form field 'file'.")
    dry_run, confirm, replace = flag("dry_run"), flag("confirm"), flag("replace")
    result = transfer.import_yaml(text, actor=actor(), origin="api", dry_run=dry_run,
                                  confirm=confirm, replace=replace)
    if result.errors:
        return _error(422, "invalid", "Nothing was imported.", errors=result.errors)
    response, status = _outcome_response(result.outcome, dry_run=dry_run)
    if status == 200:
        body = {**response.get_json(), "warnings": result.warnings, "rule": result.rule}
        return jsonify(body), 200
    return response, status
