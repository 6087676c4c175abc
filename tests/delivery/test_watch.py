"""Watching a service's configuration (CONTRACT § Watching): `?wait=S` with a current If-None-Match is
held until the document changes (200, new ETag) or the wait ends (304); a stale ETag or none answers at
once; `wait` outside 1–CONSOLE_WATCH_MAX_WAIT is a 400 naming it; a change committed by this process
or by another one on the same database wakes the watch; closing the process ends its watches; a
service's secret read through watches is audited once per version."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from console.delivery import watch
from console.extensions import db
from console.models import AuditEntry
from tests.conftest import ADMIN_PASSWORD, _create, add_user, make_app, make_token, reopen_app
from tests.db_fixtures import _MIGRATED, _pg_app

from .conftest import _until_held, _watch, bearer


@pytest.mark.parametrize("wait", ["0", "-1", "abc", "1.5", "301", ""])
def test_a_wait_outside_its_range_is_a_400_naming_it(app: Flask, edge, wait: str) -> None:
    for extra in ({}, {"If-None-Match": f'"{edge["etag"]}"'}):
        response = edge["client"].get(f"/api/v1/services/edge/config?wait={wait}",
                                      headers={**edge["own"], **extra})
        assert response.status_code == 400
        assert "wait" in response.get_json()["errors"]


def test_a_stale_or_missing_etag_is_answered_at_once(app: Flask, edge) -> None:
    for extra in ({}, {"If-None-Match": '"not-the-current-one"'}):
        started = time.monotonic()
        response = edge["client"].get("/api/v1/services/edge/config?wait=300",
                                      headers={**edge["own"], **extra})
        assert response.status_code == 200 and time.monotonic() - started < 60
        assert response.headers["ETag"].strip('"') == edge["etag"]


def test_a_current_etag_is_held_until_the_wait_ends(app: Flask, edge) -> None:
    out: dict[str, Any] = {}
    _watch(app, {**edge["own"], "If-None-Match": f'"{edge["etag"]}"'}, 1, out).join(10)
    assert out["status"] == 304 and out["seconds"] >= 1.0


def test_a_change_committed_here_answers_the_watch_with_the_new_document(app: Flask, edge) -> None:
    out: dict[str, Any] = {}
    thread = _watch(app, {**edge["own"], "If-None-Match": f'"{edge["etag"]}"'}, 120, out)
    _until_held(app)
    assert edge["client"].patch("/api/v1/brokers/mqtt", headers=edge["admin"],
                                json={"host": "127.0.0.2"}).status_code == 200
    thread.join(60)
    assert out["status"] == 200 and out["seconds"] < 120          # the change, not the wait, ended it
    assert out["etag"] != edge["etag"] and out["body"]["brokers"]["mqtt"]["host"] == "127.0.0.2"


def test_a_masked_watch_of_an_admin_follows_the_masked_etag(app: Flask, edge) -> None:
    masked = edge["client"].get("/api/v1/services/edge/config", headers=edge["admin"])
    out: dict[str, Any] = {}
    thread = _watch(app, {**edge["admin"], "If-None-Match": masked.headers["ETag"]}, 120, out)
    _until_held(app)
    edge["client"].patch("/api/v1/brokers/mqtt", headers=edge["admin"], json={"password": "Rotated-92"})
    thread.join(60)
    assert out["status"] == 200 and out["body"]["brokers"]["mqtt"]["password"] == {"set": True}


def test_a_change_committed_by_another_process_wakes_the_watch(tmp_path: Path) -> None:
    first = make_app(tmp_path / "one", WATCH_POLL_SECONDS=0.1)
    add_user(first, "admin", "admin", ADMIN_PASSWORD)
    admin = bearer(make_token(first, "ops", "admin"))
    client = first.test_client()
    client.patch("/api/v1/brokers/mqtt", headers=admin, json={"enabled": True, "host": "127.0.0.1"})
    client.post("/api/v1/services", headers=admin, json={"name": "edge", "protocols": ["mqtt"]})
    own = bearer(make_token(first, "edge-token", "service", "edge"))
    etag = client.get("/api/v1/services/edge/config", headers=own).headers["ETag"]
    second = reopen_app(tmp_path / "one")             # another process on the same database
    out: dict[str, Any] = {}
    thread = _watch(first, {**own, "If-None-Match": etag}, 120, out)
    _until_held(first)
    assert second.test_client().patch("/api/v1/brokers/mqtt", headers=admin,
                                      json={"keepalive": 42}).status_code == 200
    thread.join(60)
    assert out["status"] == 200 and out["body"]["brokers"]["mqtt"]["keepalive"] == 42
    for each in (first, second):
        with each.app_context():
            db.engine.dispose()


def test_closing_the_process_ends_its_watches_at_once(app: Flask, edge) -> None:
    out: dict[str, Any] = {}
    thread = _watch(app, {**edge["own"], "If-None-Match": f'"{edge["etag"]}"'}, 300, out)
    _until_held(app)
    watch.close(app)
    thread.join(10)
    assert out["status"] == 304 and out["seconds"] < 10


def test_watches_audit_a_secret_read_once_per_version(app: Flask, edge) -> None:
    def reads() -> int:
        with app.app_context():
            return db.session.query(AuditEntry).filter_by(action="read_config").count()

    before = reads()
    etag = edge["etag"]
    for round_ in range(3):       # three versions, each received by a watch and fetched again
        out: dict[str, Any] = {}
        thread = _watch(app, {**edge["own"], "If-None-Match": f'"{etag}"'}, 120, out)
        _until_held(app)
        edge["client"].patch("/api/v1/brokers/mqtt", headers=edge["admin"], json={"keepalive": 30 + round_})
        thread.join(60)
        assert out["status"] == 200
        etag = out["etag"]
        again = edge["client"].get("/api/v1/services/edge/config?wait=5",
                                   headers={**edge["own"], "If-None-Match": '"stale"'})
        assert again.status_code == 200
    assert reads() - before == 3


def test_watches_beyond_the_limit_are_told_to_come_back(tmp_path: Path) -> None:
    app = make_app(tmp_path / "i", WATCH_HELD=1)
    add_user(app, "admin", "admin", ADMIN_PASSWORD)
    admin = bearer(make_token(app, "ops", "admin"))
    client = app.test_client()
    client.patch("/api/v1/brokers/mqtt", headers=admin, json={"enabled": True, "host": "127.0.0.1"})
    client.post("/api/v1/services", headers=admin, json={"name": "edge", "protocols": ["mqtt"]})
    own = bearer(make_token(app, "edge-token", "service", "edge"))
    etag = client.get("/api/v1/services/edge/config", headers=own).headers["ETag"]
    out: dict[str, Any] = {}
    thread = _watch(app, {**own, "If-None-Match": etag}, 120, out)
    _until_held(app)
    second = client.get("/api/v1/services/edge/config?wait=120", headers={**own, "If-None-Match": etag})
    assert second.status_code == 429 and second.headers["Retry-After"] == "5"
    watch.close(app)
    thread.join(10)
    assert out["status"] == 304


def test_on_postgresql_a_change_committed_by_another_replica_wakes_the_watch(tmp_path: Path) -> None:
    """Two console processes over one PostgreSQL database: the committing transaction's NOTIFY
    reaches the other one's listener (PostgreSQL is not polled)."""
    first = _pg_app(tmp_path / "one", WATCH_POLL_SECONDS=60)
    second = _create(tmp_path / "one", SQLALCHEMY_DATABASE_URI=_MIGRATED["url"], WATCH_POLL_SECONDS=60)
    try:
        add_user(first, "admin", "admin", ADMIN_PASSWORD)
        admin = bearer(make_token(first, "ops", "admin"))
        client = first.test_client()
        client.patch("/api/v1/brokers/mqtt", headers=admin, json={"enabled": True, "host": "127.0.0.1"})
        client.post("/api/v1/services", headers=admin, json={"name": "edge", "protocols": ["mqtt"]})
        own = bearer(make_token(first, "edge-token", "service", "edge"))
        etag = client.get("/api/v1/services/edge/config", headers=own).headers["ETag"]
        for round_, keepalive in enumerate((42, 43)):      # twice: the listener keeps listening
            out: dict[str, Any] = {}
            thread = _watch(first, {**own, "If-None-Match": etag}, 120, out)
            _until_held(first)
            assert second.test_client().patch("/api/v1/brokers/mqtt", headers=admin,
                                              json={"keepalive": keepalive}).status_code == 200
            thread.join(60)
            assert out["status"] == 200 and out["body"]["brokers"]["mqtt"]["keepalive"] == keepalive, round_
            etag = f'"{out["etag"]}"'
    finally:
        for each in (first, second):
            watch.close(each)
            with each.app_context():
                db.session.remove()
                db.engine.dispose()


def test_a_deleted_service_ends_its_watch_with_a_404(app: Flask, edge) -> None:
    out: dict[str, Any] = {}
    thread = _watch(app, {**edge["own"], "If-None-Match": f'"{edge["etag"]}"'}, 120, out)
    _until_held(app)
    assert edge["client"].delete("/api/v1/services/edge", headers=edge["admin"]).status_code == 200
    thread.join(60)
    assert out["status"] == 404
