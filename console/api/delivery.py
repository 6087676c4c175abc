"""API: configuration delivery — a service's configuration document (ETag, 304), its
acknowledgements, roll-out state and adapters' configuration."""
from __future__ import annotations

import time
from typing import Any

from flask import current_app, jsonify, request

from .. import audit as audit_log
from ..adapters import service as registry
from ..auth import actor, service_token
from ..checks import latest as latest_checks
from ..delivery import diagnosis, fetch, outbox, watch, waves
from ..delivery import status as rollout
from ..extensions import db
from ..messaging.effective import current
from ..models import ExtensionService
from . import _error, bp, forbidden_service, not_modified
from .registry import service_document


def _service_or_404(name: str):
    row = registry.find_service(name)
    if row is None:
        return None, _error(404, "not_found", f"No registered service named {name!r}. Register it "
                                              "first: POST /api/v1/services.")
    return row, None


def _wait() -> tuple[int | None, Any]:
    """The `wait` of a watch (None for a plain fetch), or the 400 that names it."""
    raw = request.args.get("wait")
    if raw is None:
        return None, None
    limit = current_app.config["WATCH_MAX_WAIT"]
    message = f"Give wait as a whole number of seconds from 1 to {limit}."
    if not raw.isdigit() or not 1 <= int(raw) <= limit:
        return None, _error(400, "bad_request", message, errors={"wait": message})
    return int(raw), None


def _held(name: str, own: bool, header: str | None, wait: int, generation: int,
          seen: str | None) -> ExtensionService | None:
    """Hold a watch on this thread until the service's document no longer has the ETag the watcher
    names or a diagnosis is asked of it (then its row, read afresh) or the wait ends (None). No
    database connection is held while waiting. (Under the asynchronous server the watch is held
    without a thread: see _defer.)"""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    hub = watch.hub(app)
    ends = watch.deadline(wait)
    db.session.close()
    hub.hold()
    try:
        while not hub.closing and (left := ends - time.monotonic()) > 0:
            moved = hub.wait(generation, left)
            if moved == generation:
                continue
            generation = moved
            row = db.session.execute(db.select(ExtensionService).filter_by(name=name)).scalar_one_or_none()
            if row is None or not rollout.etag_matches(header, fetch.tag_of(row, own)) or (
                    own and watch.diagnosis_wakes(row.diagnosis_request, seen)):
                return row
            db.session.close()
        return None
    finally:
        hub.release()


def _defer(hold: dict[str, Any], row: ExtensionService, own: bool, header: str | None, wait: int,
           generation: int) -> None:
    """Hand the watch to the asynchronous server (console/serving.py), which holds it without a
    thread and answers it with watch.answer when the document changes."""
    hold.update(name=row.name, own=own, header=header, ends=watch.deadline(wait), generation=generation,
                actor=actor(), remote=request.remote_addr, seen=request.headers.get(watch.DIAGNOSE_SEEN_HEADER))


@bp.get("/services/<name>/config")
def service_config(name: str):
    own = service_token() is not None
    wait, invalid = _wait()
    if invalid:
        return invalid
    hub = watch.hub(current_app._get_current_object())  # type: ignore[attr-defined]
    generation = hub.generation
    row, missing = _service_or_404(name)
    if missing:
        return missing
    if row.config_etag is None:      # registered before delivery existed: record its document now
        outbox.refresh(current(), services=[row])
        db.session.commit()
    header = request.headers.get("If-None-Match")
    if wait is not None and watch.answer_now(request.environ):
        held, wait = True, None      # the asynchronous server's watch ended: answer as it stands
    else:
        held = wait is not None
    seen = request.headers.get(watch.DIAGNOSE_SEEN_HEADER)
    asked = own and watch.diagnosis_wakes(row.diagnosis_request, seen)    # answered at once, 304
    if rollout.etag_matches(header, fetch.tag_of(row, own)) and wait is not None and not asked:
        if hub.held >= current_app.config["WATCH_HELD"]:
            db.session.rollback()
            response = _error(429, "too_many_watches", "This console process holds as many watches as "
                              "it may (CONSOLE_WATCH_HELD); try again shortly.")
            return response[0], 429, {"Retry-After": "5"}
        hold = watch.deferred(request.environ)
        if hold is not None:
            _defer(hold, row, own, header, wait, generation)
            db.session.rollback()
            return not_modified(fetch.tag_of(row, own))
        changed = _held(row.name, own, header, wait, generation, seen)
        if changed is None:
            row, missing = _service_or_404(name)
            if missing:
                return missing
        else:
            row = changed
    tag = fetch.tag_of(row, own)
    if rollout.etag_matches(header, tag):
        if own and rollout.record_fetch(row, request.remote_addr):
            db.session.commit()
        response = not_modified(tag)
        diagnosis.tell(row, own, response.headers)
        return response
    tag, body = fetch.document(current(), row, own)
    if own:
        fetch.record(row, body, actor=actor(), remote=request.remote_addr, watched=held)
        db.session.commit()
    response = jsonify(body)
    response.set_etag(tag)
    response.headers["Cache-Control"] = "no-store"
    diagnosis.tell(row, own, response.headers)
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
    steps, refused = rollout.clean_diagnosis(body.get("diagnosis"))
    if refused:
        errors["diagnosis"] = refused
    if errors:
        return _error(422, "invalid", "The acknowledgement was not recorded.", errors=errors)
    assert isinstance(version, int)
    beside = None
    if steps is not None:
        beside = diagnosis.beside(row.name, steps, latest_checks().get(steps["protocol"]))
    rollout.record_ack(row, version, body["status"], message, beside)
    db.session.commit()
    waves.on_ack(row)        # the first wave of a roll-out: released, or halted
    return jsonify(rollout.service_state(row))


@bp.post("/services/<name>/diagnose")
def request_diagnosis(name: str):
    """Ask the service's agent to run the network steps of a diagnosis from its own host."""
    row, missing = _service_or_404(name)
    if missing:
        return missing
    assert row is not None
    diagnosis.request(row, actor() or "unknown", "api")
    db.session.commit()
    return jsonify(service=row.name, diagnosis_request=diagnosis.pending(row)), 202, {
        "Location": f"/api/v1/services/{row.name}"}


@bp.post("/services/<name>/diagnosis")
def service_diagnosis(name: str):
    """The network steps an agent ran for a diagnosis asked of its service."""
    row, missing = _service_or_404(name)
    if missing:
        return missing
    assert row is not None
    if service_token() is None:
        return _error(403, "forbidden", "The network steps come from the service's own token (its agent).")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _error(400, "bad_request", 'Send {"request": "<the Console-Diagnose header>", '
                                          '"diagnosis": {…}}.')
    errors: dict[str, str] = {}
    request_id = body.get("request")
    if not isinstance(request_id, str) or not 1 <= len(request_id) <= 32:
        errors["request"] = "Give the request the Console-Diagnose header named."
    steps, refused = rollout.clean_diagnosis(body.get("diagnosis"))
    if refused or steps is None:
        errors["diagnosis"] = refused or "Send the network steps the agent ran."
    if errors:
        return _error(422, "invalid", "The network steps were not recorded.", errors=errors)
    assert isinstance(request_id, str) and steps is not None
    try:
        kept = diagnosis.receive(row, request_id, steps, latest_checks().get(steps["protocol"]),
                                 actor() or row.name)
    except diagnosis.NotPending:
        db.session.rollback()
        return _error(409, "conflict", "No diagnosis with this request is waiting for this service "
                                       "(answered already, or replaced by a newer one).",
                      errors={"request": "Not the pending request."})
    db.session.commit()
    return jsonify(kept)


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
