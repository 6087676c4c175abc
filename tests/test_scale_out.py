"""Scale-out: two console instances — two gunicorn masters, two workers each, separate instance
directories, the same keys — on one PostgreSQL database. A save through one is seen through the
other (API and page), scheduled checks are not duplicated, concurrent saves through both leave the
audit log and the version history consistent (none lost), and the log-in rate limit is shared.
And the change pipeline itself: a change made from an older snapshot is replayed onto what another
process saved meanwhile (SQLite and PostgreSQL)."""
from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from console.messaging.effective import current
from console.messaging.state import read_state
from console.models import utcnow
from console.settings import service
from tests.conftest import ADMIN_PASSWORD
from tests.db_fixtures import db_app  # noqa: F401 - fixture
from tests.live_gunicorn import Browser, Gunicorn, api, flask, get, pg_database, prepare

SAVES = 6          # per instance, at the same time as the other's
INTERVAL = 2


@pytest.fixture
def two_consoles(tmp_path: Path, lab):
    url = pg_database("scaleout")
    shared = {**os.environ, "CONSOLE_DATABASE_URL": url,
              "CONSOLE_SECRET_KEY": "scale-out-secret-key", "CONSOLE_ENCRYPTION_KEY": "scale-out-passphrase",
              "CONSOLE_CHECK_INTERVAL": str(INTERVAL), "CONSOLE_CHECK_TIMEOUT": "1.5",
              "CONSOLE_DELIVERY_WORKER": "false", "CONSOLE_LOGIN_LIMIT_PER_USER": "3 per minute",
              "SP_MQTT_ENABLED": "true", "SP_MQTT_HOST": "127.0.0.1",
              "SP_MQTT_PORT": str(lab["brokers"]["mqtt"]["plain"]),
              "SP_NATS_ENABLED": "true", "SP_NATS_HOST": "127.0.0.1",
              "SP_NATS_PORT": str(lab["brokers"]["nats"]["plain"])}
    token = prepare({**shared, "CONSOLE_INSTANCE_PATH": str(tmp_path / "a")}, ADMIN_PASSWORD)
    a = Gunicorn({**shared, "CONSOLE_INSTANCE_PATH": str(tmp_path / "a")}, tmp_path / "logs",
                 workers=2, name="a")
    b = Gunicorn({**shared, "CONSOLE_INSTANCE_PATH": str(tmp_path / "b")}, tmp_path / "logs",
                 workers=2, name="b")
    with a, b:
        a.wait_all_workers()
        b.wait_all_workers()
        yield a, b, token, url


def _keepalive_on_page(browser: Browser) -> str:
    status, _, page = browser.get("/settings/messaging/mqtt")
    assert status == 200
    tag = re.search(r'<input[^>]*name="keepalive"[^>]*>', page)
    assert tag, page[:500]
    return re.search(r'value="([^"]*)"', tag.group(0)).group(1)


def test_two_instances_on_one_database(two_consoles) -> None:
    a, b, token, url = two_consoles
    engine = sa.create_engine(url)

    # scheduled checks: four workers in two masters, each protocol at most once per interval
    window = 7.0
    opened = utcnow()
    time.sleep(window)
    closed = utcnow()
    with engine.connect() as conn:
        counts = dict(conn.execute(sa.text(
            "SELECT protocol, count(*) FROM broker_checks WHERE checked_at >= :a AND checked_at <= :b"
            " GROUP BY protocol"), {"a": opened, "b": closed}).all())
    most = int(window / INTERVAL) + 1
    assert 2 <= counts.get("mqtt", 0) <= most and 2 <= counts.get("nats", 0) <= most, counts

    # a save through A is seen through B, by the API and on the page
    on_a, on_b = Browser(a.url), Browser(b.url)
    assert on_a.login("admin", ADMIN_PASSWORD)[0] == 200
    assert on_b.login("admin", ADMIN_PASSWORD)[0] == 200
    status, _, body = api(a.url, "PATCH", "/api/v1/brokers/mqtt", token, {"keepalive": 17})
    assert status == 200 and body["changed"] == ["keepalive"], body
    status, _, body = api(b.url, "GET", "/api/v1/brokers/mqtt", token)
    assert (body["settings"]["keepalive"]["value"], body["settings"]["keepalive"]["source"]) == (17, "saved")
    assert _keepalive_on_page(on_b) == "17"
    status, _, html = on_b.post("/settings/messaging/mqtt", {"keepalive": "19"}, htmx=True)
    assert status == 200 and "Saved: keepalive." in html
    assert api(a.url, "GET", "/api/v1/brokers/mqtt", token)[2]["settings"]["keepalive"]["value"] == 19
    assert _keepalive_on_page(on_a) == "19"
    carried = on_a.elsewhere(b.url)             # A's session cookie, presented to B
    assert _keepalive_on_page(carried) == "19"
    status, _, html = carried.post("/settings/messaging/mqtt", {"keepalive": "20"}, htmx=True)
    assert status == 200 and "Saved: keepalive." in html, "A's session and CSRF token work on B"

    # concurrent saves through both, to two fields of the same protocol: none is lost
    answers: list[tuple[str, int, dict]] = []
    lock = threading.Lock()

    def saves(name: str, base: str, field: str, start: int) -> None:
        for i in range(SAVES):
            status, _, body = api(base, "PATCH", "/api/v1/brokers/mqtt", token, {field: start + i})
            with lock:
                answers.append((name, status, body))

    crowd = [threading.Thread(target=saves, args=("a", a.url, "keepalive", 30)),
             threading.Thread(target=saves, args=("b", b.url, "connect_timeout", 50))]
    for t in crowd:
        t.start()
    for t in crowd:
        t.join()
    assert [s for _, s, _ in answers] == [200] * (2 * SAVES), answers
    settings = api(b.url, "GET", "/api/v1/brokers/mqtt", token)[2]["settings"]
    assert settings["keepalive"]["value"] == 30 + SAVES - 1, "A's last save stands"
    assert settings["connect_timeout"]["value"] == 50 + SAVES - 1, "B's last save stands"

    with engine.connect() as conn:
        versions = conn.execute(sa.text(
            "SELECT id, state FROM config_versions ORDER BY id")).all()
        applied = {row.version_id: row for row in conn.execute(sa.text(
            "SELECT version_id, changes FROM audit_entries WHERE outcome = 'applied' "
            "AND action = 'update'")).all()}
        saved = conn.execute(sa.text("SELECT \"values\" FROM broker_settings WHERE protocol = 'mqtt'")
                             ).scalar()
    engine.dispose()
    assert len(versions) == 1 + 3 + 2 * SAVES, "a baseline, three saves, then every concurrent one"
    assert set(applied) == {v.id for v in versions[1:]}, "one audit entry per version"
    for before, after in zip(versions, versions[1:]):
        old = before.state.get("values", {}).get("mqtt", {})
        new = after.state.get("values", {}).get("mqtt", {})
        changed = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
        audited = {c["field"] for c in applied[after.id].changes if c.get("field")}
        assert changed == audited, (after.id, old, new, applied[after.id].changes)
        for c in applied[after.id].changes:
            assert new.get(c["field"]) == c["new"], (after.id, c, new)
    assert versions[-1].state["values"]["mqtt"] == saved, "the last version is what is saved"

    # the log-in limit is one count for both: three failures through A, the fourth through B
    for _ in range(3):
        assert Browser(a.url).login("ghost", "wrong-password")[0] == 401
    status, page = Browser(b.url).login("ghost", "wrong-password")
    assert status == 429 and "Too many failed log-ins" in page


def test_a_change_made_from_an_older_snapshot_keeps_the_other(db_app: Flask) -> None:  # noqa: F811
    """Two requests read the same configuration; the first saves keepalive, the second (still holding
    its snapshot) saves connect_timeout: both stand, and the second version holds both."""
    from console.extensions import db
    from console.models import ConfigVersion

    with db_app.app_context():
        before = current()                        # the second request's snapshot, taken first
        assert before.state.values.get("mqtt", {}) == {}
        with db_app.app_context():                # the first request, saving meanwhile
            assert service.apply_changes("mqtt", {"keepalive": 21}, "one").ok
            db.session.remove()
        result = service.apply_changes("mqtt", {"connect_timeout": 33}, "two")
        assert result.ok and result.changed == ["connect_timeout"]
        assert read_state(fresh=True).values["mqtt"] == {"connect_timeout": 33, "keepalive": 21}
        last = db.session.execute(db.select(ConfigVersion).order_by(ConfigVersion.id.desc())
                                  .limit(1)).scalar_one()
        assert last.state["values"]["mqtt"] == {"connect_timeout": 33, "keepalive": 21}


def test_a_change_that_is_invalid_with_what_was_saved_meanwhile_is_refused(db_app: Flask  # noqa: F811
                                                                          ) -> None:
    """NATS: one request saves a token while another, from the snapshot before it, saves a username
    and password: each valid alone, both together not. Through the service the second is validated
    under the write lock against what is saved now (a field error); a writer that built its change
    on the older snapshot without the lock is refused (409 through the API and the page). Nothing of
    it is saved, and the refusal is audited."""
    from console.crypto import encrypt
    from console.extensions import db
    from console.models import AuditEntry
    from console.settings import changes
    from console.settings.changes import ChangeConflict

    with db_app.app_context():
        stale = current()
        with db_app.app_context():
            assert service.apply_changes("nats", {"token": "s3cret"}, "one").ok
            db.session.remove()
        candidate = stale.state.copy()
        candidate.values.setdefault("nats", {})["username"] = "u"
        candidate.secrets.setdefault("nats", {})["password"] = encrypt("p")
        with pytest.raises(ChangeConflict) as refused:
            changes.commit(candidate, actor="two", origin="api", action="update", confirm=True)
        assert "nats.token" in refused.value.errors
        assert read_state(fresh=True).values.get("nats", {}).get("username") is None
        entry = db.session.execute(db.select(AuditEntry).order_by(AuditEntry.id.desc()).limit(1)
                                   ).scalar_one()
        assert (entry.actor, entry.outcome, entry.protocols) == ("two", "rejected", "nats")
    with db_app.app_context():
        stale = current()
        with db_app.app_context():
            assert service.apply_changes("nats", {"token": "an0ther"}, "one").ok
            db.session.remove()
        result = service.apply_changes("nats", {"username": "u", "password": "p"}, "two")
        assert not result.ok and "token" in result.errors
        assert read_state(fresh=True).values.get("nats", {}).get("username") is None
    for path, headers in (("/api/v1/brokers/nats", {}), ("/settings/messaging/nats",
                                                         {"HX-Request": "true"})):
        with db_app.test_request_context(path, headers=headers):
            answer = db_app.make_response(db_app.handle_user_exception(refused.value))
        assert answer.status_code == 409
        if path.startswith("/api/"):
            assert answer.get_json()["error"] == "conflict" and "nats.token" in answer.get_json()["errors"]
        else:
            assert answer.headers["HX-Refresh"] == "true"


def test_a_watch_held_by_one_instance_is_answered_for_a_change_through_the_other(two_consoles) -> None:
    """Watches on gunicorn as `make run` serves it, two instances over one PostgreSQL: the change's
    NOTIFY wakes the watches held by the other instance's event loops, every worker of it."""
    a, b, token, _ = two_consoles
    assert api(b.url, "POST", "/api/v1/services", token, {"name": "edge", "protocols": ["mqtt"]})[0] == 201
    own = flask(a.env, "tokens", "create", "edge-token", "--role", "service", "--service", "edge")
    etag = get(a.url, "/api/v1/services/edge/config", headers={"Authorization": f"Bearer {own}"})[1]["ETag"]
    answers: list[tuple[int, str | None, float]] = []

    def watch() -> None:
        started = time.monotonic()
        status, headers, _ = get(a.url, "/api/v1/services/edge/config?wait=120", timeout=150,
                                 headers={"Authorization": f"Bearer {own}", "If-None-Match": etag})
        answers.append((status, headers.get("ETag"), time.monotonic() - started))

    threads = [threading.Thread(target=watch) for _ in range(6)]     # spread over A's two workers
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    assert api(b.url, "PATCH", "/api/v1/brokers/mqtt", token, {"keepalive": 47})[0] == 200
    for thread in threads:
        thread.join(150)
    assert len(answers) == 6
    for status, new_etag, seconds in answers:
        assert status == 200 and new_etag != etag and seconds < 60, answers
