"""A change costs the same SQL statements whatever the number of registered services (issue 16 item 1,
issue 17 item 4): services that share a document share its ETag, and their new targets and callbacks
are written set-based. Counted with an SQLAlchemy cursor event, not timed."""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import event

from console.delivery import watch
from console.extensions import db
from console.models import AuditEntry, Delivery, ExtensionService
from tests.conftest import ADMIN_PASSWORD, add_user, login, make_app, make_token

HX = {"HX-Request": "true"}


@contextmanager
def counting(app) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


def _console(tmp: Path, services: int):
    app = make_app(tmp)
    add_user(app, "admin", "admin", ADMIN_PASSWORD)
    auth = {"Authorization": f"Bearer {make_token(app, 'ops', 'admin')}"}
    api = app.test_client()
    assert api.patch("/api/v1/brokers/mqtt", json={"enabled": True, "host": "127.0.0.1"},
                     headers=auth).status_code == 200
    for i in range(services):
        answer = api.post("/api/v1/services", headers=auth, json={
            "name": f"edge-{i}", "protocols": ["mqtt"] if i % 2 else ["mqtt", "nats"],
            "callback_url": f"http://127.0.0.1:9/edge-{i}"})
        assert answer.status_code == 201, answer.get_json()
    return app, api, auth


def _patch_and_save(tmp: Path, services: int) -> tuple[int, int]:
    app, api, auth = _console(tmp, services)
    with counting(app) as statements:
        assert api.patch("/api/v1/brokers/mqtt", json={"keepalive": 45}, headers=auth).status_code == 200
    patch = len(statements)
    browser = app.test_client()
    login(browser, "admin", ADMIN_PASSWORD)
    page = browser.get("/settings/messaging/mqtt").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    form = {"host": "127.0.0.1", "keepalive": "50", **({"csrf_token": csrf.group(1)} if csrf else {})}
    with counting(app) as statements:
        assert browser.post("/settings/messaging/mqtt", data=form, headers=HX).status_code == 200
    save = len(statements)
    with app.app_context():     # every service was told, twice: the statements did the work
        assert db.session.query(Delivery).filter(Delivery.state == "pending").count() == services
        assert db.session.query(Delivery).filter(Delivery.state == "superseded").count() == services
    return patch, save


def test_a_change_costs_the_same_statements_for_20_and_200_services(tmp_path: Path) -> None:
    small = _patch_and_save(tmp_path / "20", 20)
    large = _patch_and_save(tmp_path / "200", 200)
    assert small == large, f"PATCH and page save: {small} statements with 20 services, {large} with 200"
    patch, save = small
    assert patch <= 25 and save <= 30, (patch, save)     # 22 and 26 when written


def _answered(tmp: Path, watchers: int) -> int:
    """Statements of answering `watchers` held watches (of 20 services, with their own tokens) after a
    change, as the asynchronous server does it (watch.answer)."""
    app, api, auth = _console(tmp, 20)
    with app.app_context():
        rows = db.session.query(ExtensionService).order_by(ExtensionService.name).all()
        tags = {row.name: row.config_etag for row in rows}
    holds = [{"name": f"edge-{i % 20}", "own": True, "header": f'"{tags[f"edge-{i % 20}"]}"',
              "actor": "token:edge", "remote": "127.0.0.1"} for i in range(watchers)]
    assert watch.answer(app, holds) == [None] * watchers          # nothing changed yet
    assert api.patch("/api/v1/brokers/mqtt", json={"keepalive": 45}, headers=auth).status_code == 200
    with counting(app) as statements:
        answers = watch.answer(app, holds)
    assert {status for status, _, _ in answers} == {200}
    assert all(json.loads(body)["brokers"]["mqtt"]["keepalive"] == 45 for _, _, body in answers)
    with app.app_context():     # one secret read audited per service, not per watcher
        assert db.session.query(AuditEntry).filter_by(action="read_config").count() == 20
    return len(statements)


def test_answering_held_watches_costs_the_same_statements_for_20_and_200_watchers(tmp_path: Path) -> None:
    few, many = _answered(tmp_path / "20", 20), _answered(tmp_path / "200", 200)
    assert few == many, f"{few} statements for 20 watchers, {many} for 200"
