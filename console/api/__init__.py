"""JSON API under /api/v1: the same settings, validation and masking as the page.

Callers authenticate with a session (and then send the CSRF token in X-CSRFToken on changes) or with
`Authorization: Bearer <token>`.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, g, jsonify, make_response, request
from flask_login import current_user

from .. import checks
from ..auth import actor, bearer_token, is_admin, presented_token, service_token
from ..brokers import PROTOCOLS
from ..crypto import token_digest
from ..delivery import plans
from ..delivery import status as rollout
from ..extensions import csrf
from ..messaging.schema import field_for
from ..messaging.state import read_state
from ..settings import service
from ..settings.changes import commit
from .openapi import openapi_document

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)

PUBLIC = {"api.openapi"}
READ_ONLY = {"api.check_connection"}   # POST for a body, but changes nothing: viewers may use it
# what a service token may do: its own service's configuration, registration and acknowledgements,
# and its own adapters' configuration (the views check that the name is its own)
SERVICE_ENDPOINTS = {"api.service_config", "api.service_ack", "api.register_service",
                     "api.adapter_config", "api.service_diagnosis"}


@bp.before_request
def _authenticate():
    g.api_token = None
    if request.endpoint in PUBLIC:
        return None
    if (request.endpoint == "api.service_config" and request.headers.get("If-None-Match")
            and "wait" not in request.args):     # a watch is held by the view instead
        tag = rollout.not_modified(token_digest(presented_token()), request.view_args["name"],
                                   request.headers["If-None-Match"], request.remote_addr)
        if tag is not None:     # a service polling its own unchanged document: answered here
            return not_modified(tag)
    if request.headers.get("Authorization"):
        token = bearer_token()
        if token is None:
            return _error(401, "unauthorized", "The bearer token is not valid.")
        g.api_token = token
    elif current_user.is_authenticated:
        if request.method not in ("GET", "HEAD", "OPTIONS") and current_app.config.get(
                "WTF_CSRF_ENABLED", True):
            csrf.protect()
    else:
        return _error(401, "unauthorized",
                      "Log in, or send Authorization: Bearer <token> (flask tokens create).")
    if service_token() is not None:
        if request.endpoint not in SERVICE_ENDPOINTS:
            return _error(403, "forbidden", "A service token reads its own service's "
                          "configuration and acknowledges it; nothing else.")
        name = (request.view_args or {}).get("name")
        if request.endpoint in ("api.service_config", "api.service_ack", "api.service_diagnosis") and \
                name != service_token().service:
            return forbidden_service()
        return None
    if (request.method not in ("GET", "HEAD", "OPTIONS") and request.endpoint not in READ_ONLY
            and not is_admin()):
        return _error(403, "forbidden", "This needs the admin role.")
    return None


def not_modified(tag: str):
    """A 304 with the document's ETag."""
    response = make_response("", 304)
    response.set_etag(tag)
    return response


def forbidden_service():
    """403 for a service token acting for another service."""
    return _error(403, "forbidden", f"This token is for service {service_token().service}.")


def _error(status: int, code: str, message: str, **extra: Any):
    return jsonify(error=code, message=message, **extra), status


def broker_document(protocol: str, status: dict[str, Any] | None = None) -> dict[str, Any]:
    """Public JSON of one protocol's effective settings and its check status (the /readyz view)."""
    settings = service.effective(protocol)
    errors, warnings = service.findings(settings)
    return {
        "protocol": protocol,
        "enabled": settings.enabled,
        "settings": settings.public(),
        "warnings": [{"field": f or None, "message": m} for f, m in warnings],
        "status": status or checks.current_statuses([protocol])[protocol],
    }


@bp.get("/openapi.json")
def openapi():
    return jsonify(openapi_document())


@bp.get("/brokers")
def brokers():
    statuses = checks.current_statuses()
    return jsonify(brokers={p: broker_document(p, statuses[p]) for p in PROTOCOLS})


def with_etag(response, protocol: str):
    """`response` with the ETag of `protocol`'s saved settings (send it back in If-Match)."""
    response.set_etag(service.etag(protocol))
    return response


@bp.get("/brokers/<protocol:protocol>")
def broker(protocol: str):
    return with_etag(jsonify(broker_document(protocol)), protocol)


def if_match() -> list[str] | None:
    """The ETags of the If-Match header ("*" for any), or None without the header."""
    if "If-Match" not in request.headers:
        return None
    tags = request.if_match
    return ["*"] if tags.star_tag else sorted(t for t in tags.as_set() if t)


def precondition_failed(conflict):
    """412: the protocol changed since the caller read it; nothing saved."""
    response = jsonify(error="precondition_failed",
                       message=(f"{conflict.message('you read it (If-Match is not its ETag)')} "
                                "GET it again (its ETag is new) and repeat the change if it "
                                "still applies."),
                       changed=conflict.as_dict()["changes"], by=conflict.authors)
    response.status_code = 412
    response.set_etag(conflict.etag)
    return response


class BadFlag(Exception):
    """A boolean of the API that is not one: answered 400 naming the field (see `flag`)."""

    def __init__(self, name: str, where: str) -> None:
        self.name = name
        self.message = (f"{name} must be a JSON boolean (true or false)" if where == "body" else
                        f"{name} must be true or false in the {where}")
        super().__init__(self.message)


def strict_bool(name: str, value: Any, where: str = "body") -> bool:
    """The one rule for every boolean of the API: a JSON boolean in a JSON body; `true` or `false`
    in a query string or form (the only words those can carry); BadFlag (400 naming it) otherwise."""
    if where == "body":
        if isinstance(value, bool):
            return value
        raise BadFlag(name, where)
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    raise BadFlag(name, where)


def flag(name: str, body: dict[str, Any] | None = None) -> bool:
    """A boolean option (confirm, dry_run, …) from the JSON body, else the query string, else the
    form; False when absent; BadFlag for anything but a boolean (see `strict_bool`)."""
    if body is not None and name in body:
        return strict_bool(name, body[name])
    if name in request.args:
        return strict_bool(name, request.args[name], "query string")
    if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded") \
            and name in request.form:
        return strict_bool(name, request.form[name], "form")
    return False


def bool_errors(protocol: str, body: dict[str, Any]) -> dict[str, str]:
    """A field error for every boolean setting of `protocol` in `body` that is not a JSON boolean
    (null resets it to its default); the page's form words (on, yes, 1) are not JSON booleans."""
    return {name: "Give a JSON boolean: true or false." for name, value in body.items()
            if (f := field_for(protocol, name)) is not None and f.kind == "bool"
            and value is not None and not isinstance(value, bool)}


@bp.errorhandler(BadFlag)
def _bad_flag(exc: BadFlag):
    return _error(400, "bad_request", f"{exc.message}; nothing was changed.",
                  errors={exc.name: exc.message})


def propose_plan(raw: Any):
    """Give the change of this request the roll-out plan `raw` (JSON); a 422 naming the plan's
    fields when it cannot be used (nothing saved)."""
    try:
        plans.propose(plans.parse(raw))
    except plans.PlanInvalid as exc:
        return _error(422, "invalid", "Nothing was saved: the roll-out plan is invalid.",
                      errors=exc.errors)
    return None


def changed_response(result: service.ChangeResult, document: dict[str, Any], status: int = 200):
    """200/201 with what changed; 409 with the impact when adapters need a confirmation."""
    outcome = result.outcome.as_dict() if result.outcome is not None else None
    if result.needs_confirmation:
        assert outcome is not None  # a change that needs confirmation always has its outcome
        return _error(409, "confirmation_required",
                      "This change affects existing adapters; nothing was saved. Repeat it with "
                      '"confirm": true to save anyway.', impact=outcome["impact"],
                      changes=outcome["changes"], rollout=outcome["rollout"])
    return jsonify({**document, "changed": result.changed,
                    "version": outcome["version"] if outcome else None,
                    "impact": outcome["impact"] if outcome else None,
                    "rollout": outcome["rollout"] if outcome else None}), status


@bp.patch("/brokers/<protocol:protocol>")
def patch_broker(protocol: str):
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _error(400, "bad_request",
                      'Send a JSON object of field names and values, e.g. {"host": "kafka"}.')
    options = {k: body.pop(k) for k in ("confirm", "dry_run", "rollout") if k in body}
    if not body:
        return _error(400, "bad_request", "No fields to change.")
    refused = propose_plan(options.get("rollout"))
    if refused is not None:
        return refused
    dry_run, confirm = flag("dry_run", options), flag("confirm", options)
    wrong = bool_errors(protocol, body)
    if wrong:
        prep = service.prepare_changes(protocol, {k: v for k, v in body.items() if k not in wrong})
        return _error(422, "invalid", "Nothing was saved: some fields are invalid.",
                      errors={**prep.errors, **wrong})
    tags = if_match()
    if dry_run:
        conflict = service.judge_etag(protocol, tags) if tags is not None else None
        return precondition_failed(conflict) if conflict else preview_changes(protocol, body)
    result = service.apply_changes(protocol, body, actor(), origin="api", confirm=confirm,
                                   base=service.Base(etags=tags) if tags is not None else None)
    if result.conflict is not None:
        return precondition_failed(result.conflict)
    if result.errors:
        return _error(422, "invalid", "Nothing was saved: some fields are invalid.",
                      errors=result.errors)
    response, status = changed_response(result, broker_document(protocol))
    return (with_etag(response, protocol) if result.ok else response), status


def preview_changes(protocol: str, body: dict[str, Any]):
    """The diff and adapter impact of a change, without saving it."""
    prep = service.prepare_changes(protocol, body)
    if prep.errors:
        return _error(422, "invalid", "Some fields are invalid.", errors=prep.errors)
    candidate = service.candidate_state(protocol, prep)
    return jsonify(commit(candidate, actor=actor(), origin="api", action="update",
                          dry_run=True).as_dict())


@bp.post("/brokers/<protocol:protocol>/files/<slot>")
def upload_file(protocol: str, slot: str):
    main = request.files.get("file")
    if main is None or not main.filename:
        return _error(400, "bad_request", "Send the file as multipart form field 'file'.")
    key = request.files.get("key_file")
    result = service.upload_file(
        protocol, slot, main.read(), filename=main.filename,
        password=request.form.get("password") or None,
        key_data=key.read() if key is not None and key.filename else None,
        key_password=request.form.get("key_password") or None, actor=actor(), origin="api",
        confirm=flag("confirm"))
    if result.errors:
        return _error(422, "invalid", "Nothing was saved.", errors=result.errors)
    return changed_response(result, broker_document(protocol), 201)


@bp.delete("/brokers/<protocol:protocol>/files/<slot>")
def delete_file(protocol: str, slot: str):
    result = service.delete_file(protocol, slot, actor(), origin="api", confirm=flag("confirm"))
    if result.errors:
        return _error(422, "invalid", "Nothing was changed.", errors=result.errors)
    return changed_response(result, broker_document(protocol))


@bp.post("/brokers/<protocol:protocol>/truststore")
def add_ca(protocol: str):
    """Add CA certificate(s) to the truststore, keeping the ones it holds (multipart `file`, or
    JSON {"pem": …})."""
    upload = request.files.get("file")
    body = request.get_json(silent=True) if upload is None else None
    if upload is not None and upload.filename:
        data, filename = upload.read(), upload.filename
    elif isinstance(body, dict) and isinstance(body.get("pem"), str):
        data, filename = body["pem"].encode(), "truststore.pem"
    else:
        return _error(400, "bad_request", "Send the CA as multipart field 'file' or JSON {\"pem\": …}.")
    result = service.add_ca(protocol, data, filename=filename, actor=actor(), origin="api",
                            confirm=flag("confirm"))
    if result.errors:
        return _error(422, "invalid", "Nothing was saved.", errors=result.errors)
    return changed_response(result, broker_document(protocol), 201)


@bp.delete("/brokers/<protocol:protocol>/truststore/<sha256>")
def remove_ca(protocol: str, sha256: str):
    """Remove one CA (by SHA-256 fingerprint, colons optional) from the truststore."""
    result = service.remove_ca(protocol, sha256, actor=actor(), origin="api", confirm=flag("confirm"))
    if result.errors:
        return _error(422, "invalid", "Nothing was changed.", errors=result.errors)
    return changed_response(result, broker_document(protocol))


@bp.get("/priorities")
def get_priorities():
    order, info = service.priorities()
    return jsonify(priorities=order, source=info)


@bp.put("/priorities")
def put_priorities():
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or "priorities" not in body:
        return _error(400, "bad_request", 'Send {"priorities": ["kafka", "mqtt", …]}.')
    refused = propose_plan(body.get("rollout"))
    if refused is not None:
        return refused
    dry_run, confirm = flag("dry_run", body), flag("confirm", body)
    if dry_run:
        problem = service.validate_priorities(body["priorities"])
        if problem:
            return _error(422, "invalid", "Invalid order.", errors={"priorities": problem})
        candidate = read_state()
        candidate.priorities = list(body["priorities"])
        return jsonify(commit(candidate, actor=actor(), origin="api", action="priorities",
                              dry_run=True).as_dict())
    result = service.set_priorities(body["priorities"], actor(), origin="api", confirm=confirm)
    if result.errors:
        return _error(422, "invalid", "Nothing was saved.", errors=result.errors)
    order, info = service.priorities()
    return changed_response(result, {"priorities": order, "source": info})


from . import config as _config  # noqa: E402,F401  - registers the routes on bp
from . import delivery as _delivery  # noqa: E402,F401
from . import diagnostics as _diagnostics  # noqa: E402,F401
from . import registry as _registry  # noqa: E402,F401
from . import rollouts as _rollouts  # noqa: E402,F401
from . import staging as _staging  # noqa: E402,F401
from . import tokens as _tokens  # noqa: E402,F401
