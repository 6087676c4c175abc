"""Diagnose from where the service runs, on request (issue 16 item 5): an admin asks on the service's
page or with POST /api/v1/services/<name>/diagnose; the service's own configuration answers carry
`Console-Diagnose: <request>` while it waits (a held watch ends at once with a 304, a poll's 304 says
it too); the agent names the request it runs in `Console-Diagnose-Seen` (its watch is held again) and
sends the steps to POST /api/v1/services/<name>/diagnosis, kept beside the console's own check.
Wrong steps, a stale request and other roles are refused with nothing saved."""
from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from flask import Flask

from console.delivery import diagnosis, watch
from console.extensions import db
from console.models import AuditEntry, ExtensionService
from tests.conftest import ADMIN_PASSWORD, VIEWER_PASSWORD, add_user, login, make_token

from .conftest import _until_held, _watch, bearer

STEPS = {"protocol": "mqtt", "ok": False, "cause": "connection_refused", "from": "edge-host",
         "steps": [{"name": "dns", "status": "ok", "ms": 0.2}, {"name": "tcp", "status": "failed",
                                                                "detail": "refused"},
                   {"name": "tls", "status": "skipped"}],
         "nodes": [{"node": "127.0.0.1:1", "ok": False, "cause": "connection_refused",
                    "steps": [{"name": "dns", "status": "ok"}, {"name": "tcp", "status": "failed"},
                              {"name": "tls", "status": "skipped"}]}]}


def _ask(edge: dict[str, Any]) -> str:
    answer = edge["client"].post("/api/v1/services/edge/diagnose", headers=edge["admin"])
    assert answer.status_code == 202, answer.get_json()
    return str(answer.get_json()["diagnosis_request"]["request"])


def _row(app: Flask) -> ExtensionService:
    with app.app_context():
        row = db.session.execute(db.select(ExtensionService).filter_by(name="edge")).scalar_one()
        db.session.expunge(row)
        return row


def test_a_request_ends_the_held_watch_at_once_with_a_304_naming_it(app: Flask, edge) -> None:
    out: dict[str, Any] = {}
    thread = _watch(app, {**edge["own"], "If-None-Match": f'"{edge["etag"]}"'}, 120, out)
    _until_held(app)
    request = _ask(edge)
    thread.join(60)
    assert out["status"] == 304 and out["seconds"] < 60 and out["etag"] == edge["etag"]
    answer = edge["client"].get("/api/v1/services/edge/config", headers=edge["own"])
    assert answer.status_code == 200 and answer.headers[watch.DIAGNOSE_HEADER] == request


def test_the_agent_running_it_is_held_again_and_polls_are_told_too(app: Flask, edge) -> None:
    request = _ask(edge)
    current = {**edge["own"], "If-None-Match": f'"{edge["etag"]}"'}
    poll = edge["client"].get("/api/v1/services/edge/config", headers=current)    # no wait: a poll
    assert poll.status_code == 304 and poll.headers[watch.DIAGNOSE_HEADER] == request
    at_once: dict[str, Any] = {}
    _watch(app, current, 30, at_once).join(60)         # not seen yet: not held
    assert at_once["status"] == 304 and at_once["seconds"] < 30
    held: dict[str, Any] = {}
    _watch(app, {**current, watch.DIAGNOSE_SEEN_HEADER: request}, 1, held).join(30)
    assert held["status"] == 304 and held["seconds"] >= 1.0     # running it: the wait runs out
    masked = edge["client"].get("/api/v1/services/edge/config", headers=edge["admin"])
    assert watch.DIAGNOSE_HEADER not in masked.headers          # only the service's own token is told


def test_the_steps_are_kept_beside_the_consoles_check_and_the_request_ends(app: Flask, edge) -> None:
    request = _ask(edge)
    answer = edge["client"].post("/api/v1/services/edge/diagnosis", headers=edge["own"],
                                 json={"request": request, "diagnosis": STEPS})
    assert answer.status_code == 200, answer.get_json()
    kept = answer.get_json()
    assert kept["request"] == request and kept["agent"]["cause"] == "connection_refused"
    assert kept["summary"] == ("The console has not checked this protocol yet; edge cannot: "
                               "127.0.0.1:1: connection_refused at TCP.")
    service = edge["client"].get("/api/v1/services/edge", headers=edge["admin"]).get_json()
    assert service["diagnosis_request"] is None and service["requested_diagnosis"]["request"] == request
    poll = edge["client"].get("/api/v1/services/edge/config",
                              headers={**edge["own"], "If-None-Match": f'"{edge["etag"]}"'})
    assert poll.status_code == 304 and watch.DIAGNOSE_HEADER not in poll.headers
    again = edge["client"].post("/api/v1/services/edge/diagnosis", headers=edge["own"],
                                json={"request": request, "diagnosis": STEPS})
    assert again.status_code == 409 and "request" in again.get_json()["errors"]
    with app.app_context():
        actions = [a for (a,) in db.session.execute(db.select(AuditEntry.action).order_by(AuditEntry.id))]
    assert actions[-2:] == ["agent_diagnosis_requested", "agent_diagnosis_received"]


@pytest.mark.parametrize("body, field", [
    ({"request": "x" * 40, "diagnosis": STEPS}, "request"),
    ({"request": 7, "diagnosis": STEPS}, "request"),
    ({"diagnosis": {**STEPS, "cause": "gremlins"}}, "diagnosis"),
    ({}, "diagnosis"),
])
def test_steps_it_cannot_read_are_refused_and_the_request_waits_on(app: Flask, edge, body, field) -> None:
    request = _ask(edge)
    answer = edge["client"].post("/api/v1/services/edge/diagnosis", headers=edge["own"],
                                 json={"request": request, **body})
    assert answer.status_code == 422 and field in answer.get_json()["errors"]
    row = _row(app)
    assert row.diagnosis_request == request and row.requested_diagnosis is None


def test_only_admins_ask_and_only_the_services_own_token_answers(app: Flask, edge) -> None:
    add_user(app, "viewer", "viewer", VIEWER_PASSWORD)
    viewer = bearer(make_token(app, "look", "viewer"))
    assert edge["client"].post("/api/v1/services/edge/diagnose", headers=viewer).status_code == 403
    assert edge["client"].post("/api/v1/services/nobody/diagnose", headers=edge["admin"]).status_code == 404
    request = _ask(edge)
    assert edge["client"].post("/api/v1/services/edge/diagnosis", headers=edge["admin"],
                               json={"request": request, "diagnosis": STEPS}).status_code == 403
    assert edge["client"].post("/api/v1/services", headers=edge["admin"],
                               json={"name": "other", "protocols": ["mqtt"]}).status_code == 201
    other = bearer(make_token(app, "other-token", "service", "other"))
    assert edge["client"].post("/api/v1/services/edge/diagnosis", headers=other,
                               json={"request": request, "diagnosis": STEPS}).status_code == 403
    assert edge["client"].post("/api/v1/services/other/diagnose", headers=other).status_code == 403
    assert _row(app).requested_diagnosis is None


def test_the_service_page_asks_waits_and_shows_the_steps(app: Flask, edge) -> None:
    page = login(app.test_client(), "admin", ADMIN_PASSWORD)
    listed = page.get("/adapters").get_data(as_text=True)
    assert 'href="/adapters/services/edge"' in listed
    first = page.get("/adapters/services/edge").get_data(as_text=True)
    assert "No diagnosis from edge yet." in first and "Diagnose from edge" in first
    asked = page.post("/adapters/services/edge/diagnose")                     # without JavaScript
    assert asked.status_code == 302 and asked.headers["Location"].endswith("/adapters/services/edge")
    waiting = page.get("/adapters/services/edge").get_data(as_text=True)
    assert "Waiting for edge's agent to run the steps" in waiting
    assert '<meta http-equiv="refresh"' in waiting and 'hx-trigger="every 1s"' in waiting
    fragment = page.post("/adapters/services/edge/diagnose", headers={"HX-Request": "true"})
    text = fragment.get_data(as_text=True)
    assert text.lstrip().startswith("<section") and "Asked edge to run the network steps" in text
    request = _row(app).diagnosis_request
    with app.app_context():     # a minute on: the page says the service has not answered
        row = db.session.execute(db.select(ExtensionService).filter_by(name="edge")).scalar_one()
        row.diagnosis_requested_at = row.diagnosis_requested_at - diagnosis.PATIENCE - dt.timedelta(seconds=1)
        db.session.commit()
    late = page.get("/adapters/services/edge").get_data(as_text=True)
    assert "edge has not answered in 60 s" in late
    assert edge["client"].post("/api/v1/services/edge/diagnosis", headers=edge["own"],
                               json={"request": request, "diagnosis": STEPS}).status_code == 200
    done = page.get("/adapters/services/edge", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "edge cannot: 127.0.0.1:1: connection_refused at TCP." in done
    assert 'hx-trigger="every 1s"' not in done and 'data-cause="connection_refused"' in done
    assert page.get("/adapters/services/nobody").status_code == 404


def test_a_viewer_sees_the_page_but_no_button(app: Flask, edge) -> None:
    add_user(app, "viewer", "viewer", VIEWER_PASSWORD)
    viewer = login(app.test_client(), "viewer", VIEWER_PASSWORD)
    text = viewer.get("/adapters/services/edge").get_data(as_text=True)
    assert "Service edge" in text and not re.search(r"<button[^>]*>Diagnose from", text)
    assert viewer.post("/adapters/services/edge/diagnose").status_code == 403
