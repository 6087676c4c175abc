"""API: a client certificate staged next to the current one — stage, look, try (check, diagnose),
promote, discard (console/settings/staging.py). Every route but the GET needs the admin role."""
from __future__ import annotations

from flask import current_app, jsonify, request

from .. import checks, diagnostics, work
from ..auth import actor
from ..settings import staging
from . import _error, bp, broker_document, changed_response, flag
from .diagnostics import diagnosis_timeout

NOTHING_STAGED = "No client certificate is staged for this protocol."


@bp.get("/brokers/<protocol:protocol>/staged-certificate")
def staged_certificate(protocol: str):
    found = staging.describe(protocol)
    if found is None:
        return _error(404, "not_found", NOTHING_STAGED)
    return jsonify({"protocol": protocol, "staged": found})


@bp.post("/brokers/<protocol:protocol>/staged-certificate")
def stage_certificate(protocol: str):
    """Stage a client certificate with its key: multipart `file` (+ `key_file`, `password`,
    `key_password`) as an upload of tls_cert, or JSON {"pem": …, "key_pem": …}."""
    upload = request.files.get("file")
    body = request.get_json(silent=True) if upload is None else None
    key_data: bytes | None = None
    password = key_password = None
    if upload is not None and upload.filename:
        data, filename = upload.read(), upload.filename
        key = request.files.get("key_file")
        key_data = key.read() if key is not None and key.filename else None
        password = request.form.get("password") or None
        key_password = request.form.get("key_password") or None
    elif isinstance(body, dict) and isinstance(body.get("pem"), str):
        data, filename = body["pem"].encode(), "staged.pem"
        if body.get("key_pem") is not None:
            if not isinstance(body["key_pem"], str):
                return _error(422, "invalid", "Nothing was staged.",
                              errors={"key_pem": "Give the key as PEM text."})
            key_data = body["key_pem"].encode()
    else:
        return _error(400, "bad_request", "Send the certificate as multipart field 'file' (and "
                      "'key_file') or JSON {\"pem\": …, \"key_pem\": …}.")
    result = staging.stage(protocol, data, filename=filename, password=password, key_data=key_data,
                           key_password=key_password, actor=actor(), origin="api")
    if result.errors:
        return _error(422, "invalid", "Nothing was staged.", errors=result.errors)
    return jsonify({"protocol": protocol, "staged": staging.describe(protocol),
                    "warnings": [m for _, m in result.warnings]}), 201


@bp.delete("/brokers/<protocol:protocol>/staged-certificate")
def discard_certificate(protocol: str):
    if not staging.discard(protocol, actor=actor(), origin="api"):
        return _error(404, "not_found", NOTHING_STAGED)
    return jsonify({"protocol": protocol, "discarded": True})


@bp.post("/brokers/<protocol:protocol>/staged-certificate/check")
def check_staged_certificate(protocol: str):
    """One real check with the staged pair (not recorded: the protocol's status stays what the
    current settings give)."""
    settings = staging.settings(protocol)
    if settings is None:
        return _error(404, "not_found", NOTHING_STAGED)
    timeout = current_app.config["CHECK_TIMEOUT"]
    work.room()
    result = work.call(checks.check_settings, settings, timeout, timeout=timeout)
    return jsonify({**result.as_dict(), "staged_certificate": staging.label(protocol)})


@bp.post("/brokers/<protocol:protocol>/staged-certificate/diagnose")
def diagnose_staged_certificate(protocol: str):
    """A step-wise diagnosis with the staged pair, stored and labelled with it."""
    timeout, refused = diagnosis_timeout()
    if refused is not None:
        return refused
    settings = staging.settings(protocol)
    if settings is None:
        return _error(404, "not_found", NOTHING_STAGED)
    row = diagnostics.run_and_store(protocol, timeout, actor=actor(), origin="api", pooled=True,
                                    settings=settings, staged=staging.label(protocol))
    return jsonify({**row.result, "id": row.id})


@bp.post("/brokers/<protocol:protocol>/staged-certificate/promote")
def promote_certificate(protocol: str):
    """The staged pair becomes the client certificate in use: one ordinary change (`dry_run`: the
    impact preview alone; `confirm` when adapters are affected)."""
    body = request.get_json(silent=True)
    options = body if isinstance(body, dict) else None
    if staging.get(protocol) is None:
        return _error(404, "not_found", NOTHING_STAGED)
    if flag("dry_run", options):
        preview = staging.preview(protocol, actor=actor())
        assert preview is not None      # staged: looked up above
        return jsonify(preview.as_dict())
    result = staging.promote(protocol, actor=actor(), origin="api", confirm=flag("confirm", options))
    if result.errors:
        return _error(422, "invalid", "Nothing was changed.", errors=result.errors)
    return changed_response(result, broker_document(protocol))
