"""API: step-wise diagnosis, reports, certificate inventory and pitfalls."""
from __future__ import annotations

from flask import current_app, jsonify, request

from .. import diagnostics
from ..auth import actor
from ..settings import service as settings_service
from . import _error, _protocol, bp
from ..diagnostics.lint import lint


@bp.post("/brokers/<protocol>/diagnose")
def diagnose(protocol: str):
    _protocol(protocol)
    try:
        timeout = float(request.args.get("timeout", current_app.config["CHECK_TIMEOUT"]))
    except ValueError:
        return _error(400, "bad_request", "timeout is a number of seconds.")
    if not 0.1 <= timeout <= 300:
        return _error(400, "bad_request", "timeout must be between 0.1 and 300 seconds.")
    row = diagnostics.run_and_store(protocol, timeout, actor=actor(), origin="api")
    return jsonify({**row.result, "id": row.id})


@bp.get("/diagnoses/<int:run_id>")
def diagnosis(run_id: int):
    row = diagnostics.get(run_id)
    if row is None:
        return _error(404, "not_found", "No such diagnosis.")
    return jsonify({**(row.result or {}), "id": row.id, "status": row.status})


@bp.get("/diagnoses/<int:run_id>/report")
def diagnosis_report(run_id: int):
    row = diagnostics.get(run_id)
    if row is None or row.status == "running":
        return _error(404, "not_found", "No finished diagnosis with that id.")
    return jsonify(diagnostics.report(row))


@bp.get("/certificates")
def certificates():
    return jsonify(certificates=[diagnostics.refresh_status(c) for c in diagnostics.inventory()])


@bp.get("/lint")
def pitfalls():
    return jsonify(findings=[f.as_dict() for f in lint(settings_service.effective_all())])
