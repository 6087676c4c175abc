"""API: step-wise diagnosis, reports, certificate inventory and pitfalls."""
from __future__ import annotations

from flask import current_app, jsonify, request, url_for

from .. import diagnostics
from ..auth import actor
from ..diagnostics.lint import lint
from ..settings import service as settings_service
from . import _error, bp, strict_bool


@bp.post("/brokers/<protocol:protocol>/diagnose")
def diagnose(protocol: str):
    limit = current_app.config["DIAGNOSE_MAX_TIMEOUT"]
    try:
        timeout = float(request.args.get("timeout", min(current_app.config["CHECK_TIMEOUT"], limit)))
    except ValueError:
        return _error(400, "bad_request", "timeout is a number of seconds.",
                      errors={"timeout": "Use a number of seconds."})
    if not 0.1 <= timeout <= limit:
        message = f"Use 0.1 to {limit:g} seconds (CONSOLE_DIAGNOSE_MAX_TIMEOUT)."
        return _error(400, "bad_request", f"timeout must be between 0.1 and {limit:g} seconds.",
                      errors={"timeout": message})
    if not strict_bool("wait", request.args.get("wait", "true"), "query string"):
        run_id = diagnostics.start(protocol, timeout, actor=actor(), origin="api")
        row = diagnostics.get(run_id)
        assert row is not None  # just stored by start()
        return jsonify({**(row.result or {}), "id": row.id, "status": row.status}), 202, {
            "Location": url_for("api.diagnosis", run_id=run_id)}
    row = diagnostics.run_and_store(protocol, timeout, actor=actor(), origin="api", pooled=True)
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
