"""API: step-wise diagnosis, reports, certificate inventory and pitfalls."""
from __future__ import annotations

from typing import Any

from flask import current_app, jsonify, request, url_for

from .. import diagnostics
from ..auth import actor
from ..diagnostics.lint import lint
from ..settings import service as settings_service
from . import _error, bp, strict_bool


def diagnosis_timeout() -> tuple[float, Any]:
    """The `timeout` query parameter of a diagnosis, and the 400 answer when it is not valid."""
    limit = current_app.config["DIAGNOSE_MAX_TIMEOUT"]
    try:
        timeout = float(request.args.get("timeout", min(current_app.config["CHECK_TIMEOUT"], limit)))
    except ValueError:
        return 0.0, _error(400, "bad_request", "timeout is a number of seconds.",
                           errors={"timeout": "Use a number of seconds."})
    if not 0.1 <= timeout <= limit:
        message = f"Use 0.1 to {limit:g} seconds (CONSOLE_DIAGNOSE_MAX_TIMEOUT)."
        return 0.0, _error(400, "bad_request", f"timeout must be between 0.1 and {limit:g} seconds.",
                           errors={"timeout": message})
    return timeout, None


@bp.post("/brokers/<protocol:protocol>/diagnose")
def diagnose(protocol: str):
    timeout, refused = diagnosis_timeout()
    if refused is not None:
        return refused
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


@bp.post("/diagnoses/<int:run_id>/trust")
def trust_ca(run_id: int):
    """Trust on first use, with approval: `{"sha256": …, "confirm": true, "leaf"?: true}`. Without
    `confirm`, 409 with the certificate and the openssl line to compare its fingerprint."""
    row = diagnostics.get(run_id)
    if row is None:
        return _error(404, "not_found", "No such diagnosis.")
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("sha256"), str):
        return _error(400, "bad_request", 'Send {"sha256": "<fingerprint>", "confirm": true}.',
                      errors={"sha256": "The SHA-256 fingerprint of the certificate to trust."})
    wanted = body["sha256"].replace(":", "").upper()
    choice = next((c for c in diagnostics.trust_choices(row)
                   if c["sha256"].replace(":", "") == wanted), None)
    if body.get("confirm") is not True:
        if choice is None:
            return _error(422, "invalid", "Nothing to trust.",
                          errors={"sha256": "Not a certificate of a tls_untrusted chain here."})
        return _error(409, "confirmation_required",
                      "Compare the fingerprint, then send the same request with \"confirm\": true.",
                      certificate=choice, openssl=choice["openssl"])
    try:
        result = diagnostics.trust(row, wanted, leaf=body.get("leaf") is True, actor=actor(),
                                   origin="api")
    except diagnostics.TrustRefused as exc:
        return _error(422, "invalid", str(exc), errors={"sha256": str(exc)})
    if result.errors:
        return _error(422, "invalid", "Nothing was saved.", errors=result.errors)
    return jsonify(protocol=row.protocol, trusted=choice, changed=result.changed,
                   warnings=[m for _, m in result.warnings])
