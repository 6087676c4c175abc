"""No lost updates (console/settings/conflicts.py, the write lock in settings/changes.py): two admins
editing one protocol on the page, two API clients with ETag/If-Match — one after the other through the
app, and racing for real over HTTP from two threads against a threaded server, on SQLite and
PostgreSQL."""
from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import subprocess
import threading
from typing import Any, Iterator

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from console.extensions import db
from console.models import AuditEntry, ConfigVersion
from console.settings import changes, service
from tests.clients.live_console import LiveConsole
from tests.conftest import ADMIN_PASSWORD, add_user, login, make_token
from tests.db_fixtures import db_app  # noqa: F401 - fixture
from tests.settings.test_settings_page import HX, form_as_rendered
from tests.test_readme import README

OTHER_PASSWORD = "other-admin-password-1"


@pytest.fixture
def two_admins(app: Flask) -> tuple[FlaskClient, FlaskClient]:
    add_user(app, "alice", "admin", ADMIN_PASSWORD)
    add_user(app, "bob", "admin", OTHER_PASSWORD)
    return (login(app.test_client(), "alice", ADMIN_PASSWORD),
            login(app.test_client(), "bob", OTHER_PASSWORD))


def saved(client: FlaskClient, protocol: str) -> dict[str, Any]:
    settings = client.get(f"/api/v1/brokers/{protocol}").get_json()["settings"]
    return {name: item["value"] for name, item in settings.items()}


def test_the_form_carries_the_version_it_was_opened_at(two_admins) -> None:
    alice, _ = two_admins
    assert form_as_rendered(alice, "mqtt")["version"] == ["0"]
    alice.post("/settings/messaging/mqtt", headers=HX, data={"host": "a.example"})
    html = alice.get("/settings/messaging").get_data(as_text=True)
    versions = set(re.findall(r'name="version" value="(\d+)"', html))
    assert versions == {"2"}      # v1 is the baseline before the first change


def test_a_second_save_keeps_what_the_first_changed(two_admins) -> None:
    alice, bob = two_admins
    a, b = form_as_rendered(alice, "mqtt"), form_as_rendered(bob, "mqtt")
    a["host"] = ["a.example"]
    assert alice.post("/settings/messaging/mqtt", headers=HX, data=a).status_code == 200
    b["port"] = ["1999"]           # bob's form still says host localhost: it is not his change
    answer = bob.post("/settings/messaging/mqtt", headers=HX, data=b)
    html = answer.get_data(as_text=True)
    assert answer.status_code == 200, html
    assert "Saved: port." in html
    assert ("Kept what was changed by someone else since you opened it: MQTT host: localhost "
            "(default) → a.example.") in html
    assert saved(alice, "mqtt")["host"] == "a.example" and saved(alice, "mqtt")["port"] == 1999


def test_a_save_over_a_field_the_other_changed_is_refused_and_keeps_the_input(two_admins, app) -> None:
    alice, bob = two_admins
    a, b = form_as_rendered(alice, "mqtt"), form_as_rendered(bob, "mqtt")
    a["host"] = ["a.example"]
    alice.post("/settings/messaging/mqtt", headers=HX, data=a)
    b["host"], b["keepalive"] = ["b.example"], ["30"]
    answer = bob.post("/settings/messaging/mqtt", headers=HX, data=b)
    html = answer.get_data(as_text=True)
    assert answer.status_code == 409
    assert "MQTT was changed by someone else since you opened it (v2 by alice (page)): nothing was saved." in html
    row = re.search(r'<tr data-field="host">(.*?)</tr>', html).group(1)
    assert re.findall(r"<td>(.*?)</td>", row) == ["host", "localhost", "b.example", "a.example"]
    assert 'value="b.example"' in html and 'value="30"' in html      # his input stays
    assert 'name="version" value="2"' in html                         # now opened at v2
    assert saved(alice, "mqtt")["host"] == "a.example" and saved(alice, "mqtt")["keepalive"] == 60
    with app.app_context():
        entry = db.session.execute(db.select(AuditEntry).order_by(AuditEntry.id.desc())).scalars().first()
        assert (entry.actor, entry.outcome) == ("bob", "rejected")
        assert "host: changed by someone else since you opened it: localhost → a.example" in entry.summary
    again = form_as_rendered_from(html)            # he saves again: his values replace hers
    answer = bob.post("/settings/messaging/mqtt", headers=HX, data=again)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert saved(alice, "mqtt")["host"] == "b.example" and saved(alice, "mqtt")["keepalive"] == 30


def form_as_rendered_from(html: str, protocol: str = "mqtt") -> dict[str, list[str]]:
    """The section form of `protocol` in a page or fragment, as the browser would submit it."""
    form = html[html.index(f'<form method="post" action="/settings/messaging/{protocol}"'):]
    form = form[:form.index("</form>")]
    data: dict[str, list[str]] = {}
    for tag in re.findall(r"<input[^>]*>", form):
        name = re.search(r'name="([^"]+)"', tag)
        if not name or "disabled" in tag or name.group(1) in ("csrf_token", "save_anyway"):
            continue
        if 'type="checkbox"' in tag and "checked" not in tag:
            continue
        value = re.search(r'value="([^"]*)"', tag)
        data.setdefault(name.group(1), []).append(value.group(1) if value else "")
    for select in re.findall(r'<select[^>]*name="([^"]+)"[^>]*>(.*?)</select>', form, re.S):
        chosen = re.search(r'<option value="([^"]*)" selected', select[1])
        data[select[0]] = [chosen.group(1) if chosen else ""]
    return data


def test_the_same_change_twice_is_no_conflict(two_admins) -> None:
    alice, bob = two_admins
    a, b = form_as_rendered(alice, "nats"), form_as_rendered(bob, "nats")
    a["host"] = b["host"] = ["n.example"]
    alice.post("/settings/messaging/nats", headers=HX, data=a)
    answer = bob.post("/settings/messaging/nats", headers=HX, data=b)
    assert answer.status_code == 200 and "No changes." in answer.get_data(as_text=True)


def test_a_change_of_another_protocol_is_no_conflict(two_admins) -> None:
    alice, bob = two_admins
    a, b = form_as_rendered(alice, "kafka"), form_as_rendered(bob, "mqtt")
    a["host"] = ["k.example"]
    alice.post("/settings/messaging/kafka", headers=HX, data=a)
    b["host"] = ["m.example"]
    answer = bob.post("/settings/messaging/mqtt", headers=HX, data=b)
    html = answer.get_data(as_text=True)
    assert answer.status_code == 200 and "Saved: host." in html and "Kept" not in html


def test_without_javascript_the_refusal_is_the_whole_page(two_admins) -> None:
    alice, bob = two_admins
    a, b = form_as_rendered(alice, "mqtt"), form_as_rendered(bob, "mqtt")
    a["port"] = ["1884"]
    alice.post("/settings/messaging/mqtt", data=a)
    b["port"] = ["1885"]
    answer = bob.post("/settings/messaging/mqtt", data=b)
    html = answer.get_data(as_text=True)
    assert answer.status_code == 409 and "<html" in html
    assert "changed by someone else since you opened it" in html and 'value="1885"' in html


@pytest.mark.parametrize("version", ["99", "abc"])
def test_a_form_from_an_unknown_version(two_admins, version: str) -> None:
    alice, _ = two_admins
    data = {**form_as_rendered(alice, "mqtt"), "version": [version], "host": ["x.example"]}
    answer = alice.post("/settings/messaging/mqtt", headers=HX, data=data)
    assert answer.status_code == (422 if version == "99" else 400)
    if version == "99":
        assert "which this console does not have: reload the page" in answer.get_data(as_text=True)
    assert saved(alice, "mqtt")["host"] == "localhost"


# -- the API: ETag and If-Match ----------------------------------------------------------------------

def test_etag_and_if_match(client: FlaskClient, admin_token: str) -> None:
    auth = {"Authorization": f"Bearer {admin_token}"}
    first = client.get("/api/v1/brokers/mqtt", headers=auth)
    tag = first.headers["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', tag)
    assert client.get("/api/v1/brokers/mqtt", headers=auth).headers["ETag"] == tag
    changed = client.patch("/api/v1/brokers/mqtt", json={"host": "a.example"},
                           headers={**auth, "If-Match": tag})
    assert changed.status_code == 200
    new = changed.headers["ETag"]
    assert new != tag and client.get("/api/v1/brokers/mqtt", headers=auth).headers["ETag"] == new
    stale = client.patch("/api/v1/brokers/mqtt", json={"host": "b.example"},
                         headers={**auth, "If-Match": tag})
    body = stale.get_json()
    assert stale.status_code == 412 and stale.headers["ETag"] == new
    assert body["error"] == "precondition_failed"
    assert "MQTT was changed by someone else since you read it" in body["message"]
    assert body["changed"] == [{"protocol": "mqtt", "field": "host", "old": None, "new": "a.example",
                                "install_time": True}]
    assert body["by"] == ["v2 by token:ci-admin (api)"]
    dry = client.patch("/api/v1/brokers/mqtt", json={"host": "b.example", "dry_run": True},
                       headers={**auth, "If-Match": tag})
    assert dry.status_code == 412
    assert client.get("/api/v1/brokers/mqtt", headers=auth).get_json()["settings"]["host"]["value"] == "a.example"
    # another protocol's change leaves this one's ETag; * and a list with the current one match
    assert client.patch("/api/v1/brokers/kafka", json={"host": "k"}, headers=auth).status_code == 200
    assert client.get("/api/v1/brokers/mqtt", headers=auth).headers["ETag"] == new
    listed = client.patch("/api/v1/brokers/mqtt", json={"port": 1999},
                          headers={**auth, "If-Match": f'"0000", {new}'})
    assert listed.status_code == 200
    assert client.patch("/api/v1/brokers/mqtt", json={"port": 1998},
                        headers={**auth, "If-Match": "*"}).status_code == 200
    assert client.patch("/api/v1/brokers/mqtt", json={"port": 1997},
                        headers={**auth, "If-Match": "garbage"}).status_code == 412
    assert client.patch("/api/v1/brokers/mqtt", json={"port": 1996}, headers=auth).status_code == 200


def test_an_upload_changes_the_etag(client: FlaskClient, admin_token: str, pki) -> None:
    auth = {"Authorization": f"Bearer {admin_token}"}
    tag = client.get("/api/v1/brokers/nats", headers=auth).headers["ETag"]
    upload = client.post("/api/v1/brokers/nats/files/tls_ca", headers=auth,
                         data={"file": (io.BytesIO(pki["ca.crt"].read_bytes()), "ca.pem")},
                         content_type="multipart/form-data")
    assert upload.status_code == 201
    stale = client.patch("/api/v1/brokers/nats", json={"host": "x"}, headers={**auth, "If-Match": tag})
    assert stale.status_code == 412 and stale.get_json()["changed"][0]["field"] == "tls_ca"


# -- the race for real: two clients over HTTP at the same moment ---------------------------------------

@pytest.fixture
def served(db_app: Flask) -> Iterator[str]:  # noqa: F811
    """db_app (SQLite, then PostgreSQL) served over HTTP by a threaded server."""
    server = make_server("127.0.0.1", 0, db_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def _at_once(*calls) -> list[Any]:
    """Run `calls` in threads released together; their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


ROUNDS = 4


def test_two_api_clients_racing_with_if_match(db_app: Flask, served: str) -> None:  # noqa: F811
    tokens = [make_token(db_app, "one", "admin"), make_token(db_app, "two", "admin")]
    sessions = [requests.Session() for _ in tokens]
    for s, token in zip(sessions, tokens):
        s.headers["Authorization"] = f"Bearer {token}"
    url = f"{served}/api/v1/brokers/mqtt"
    for n in range(ROUNDS):
        tags = [s.get(url, timeout=30).headers["ETag"] for s in sessions]
        assert tags[0] == tags[1]
        answers = _at_once(*[
            (lambda s=s, i=i, n=n, tags=tags: s.patch(url, json={"host": f"h{n}-{i}.example"},
                                                       headers={"If-Match": tags[i]}, timeout=60))
            for i, s in enumerate(sessions)])
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200, 412], [a.text for a in answers]
        winner = next(i for i, a in enumerate(answers) if a.status_code == 200)
        loser = answers[1 - winner].json()
        assert loser["changed"][0]["new"] == f"h{n}-{winner}.example"
        assert sessions[0].get(url, timeout=30).json()["settings"]["host"]["value"] == f"h{n}-{winner}.example"
    with db_app.app_context():
        versions = db.session.execute(db.select(db.func.count(ConfigVersion.id))).scalar()
    assert versions == ROUNDS + 1       # the baseline, then exactly one change per round


def test_two_page_saves_racing_keep_both_changes(db_app: Flask, served: str) -> None:  # noqa: F811
    add_user(db_app, "alice", "admin", ADMIN_PASSWORD)
    add_user(db_app, "bob", "admin", OTHER_PASSWORD)
    sessions = []
    for name, password in (("alice", ADMIN_PASSWORD), ("bob", OTHER_PASSWORD)):
        s = requests.Session()
        assert s.post(f"{served}/login", data={"username": name, "password": password},
                      allow_redirects=False, timeout=30).status_code == 302
        sessions.append(s)
    url = f"{served}/settings/messaging/rabbitmq"
    for n in range(ROUNDS):
        forms = [form_as_rendered_from(s.get(f"{served}/settings/messaging/rabbitmq", timeout=30).text, "rabbitmq")
                 for s in sessions]
        assert forms[0]["version"] == forms[1]["version"]
        forms[0]["host"] = [f"r{n}.example"]
        forms[1]["vhost"] = [f"/v{n}"]
        answers = _at_once(*[(lambda s=s, f=f: s.post(url, data=f, headers=HX, timeout=60))
                             for s, f in zip(sessions, forms)])
        assert [a.status_code for a in answers] == [200, 200], [a.text[:300] for a in answers]
        now = sessions[0].get(f"{served}/api/v1/brokers/rabbitmq", timeout=30).json()["settings"]
        assert (now["host"]["value"], now["vhost"]["value"]) == (f"r{n}.example", f"/v{n}")
        assert any("Kept what was changed by someone else" in a.text for a in answers)


def test_the_write_lock_is_taken_once_per_transaction(app: Flask) -> None:
    with app.app_context():
        changes.lock()
        held = db.session.info["console_config_lock"]
        changes.lock()
        assert db.session.info["console_config_lock"] is held
        db.session.commit()
        changes.lock()
        assert db.session.info["console_config_lock"] is not held
        db.session.rollback()


def test_the_readme_if_match_lines(tmp_path) -> None:
    text = README.read_text()
    start = text.index("## Two people changing one protocol\n")
    section = text[start:text.index("\n## ", start + 1)]
    (block,) = re.findall(r"```bash\n(.*?)```", section, re.S)
    stale_again = block.splitlines()[1].replace('"port": 1884', '"port": 1885')
    console = LiveConsole(tmp_path / "live").start()
    try:
        env = {**os.environ, "API": f"{console.url}/api/v1",
               "AUTH": f"Authorization: Bearer {console.admin_token}"}
        script = f"{block}\necho\n{stale_again}\n"      # the second PATCH sends the same, old ETag
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True,
                                text=True, timeout=60, env=env)
        assert result.returncode == 0, result.stderr
        saved, refused = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
        assert saved["changed"] == ["port"] and saved["settings"]["port"]["value"] == 1884
        assert refused["error"] == "precondition_failed"
        assert refused["changed"][0]["field"] == "port" and refused["changed"][0]["new"] == 1884
    finally:
        console.close()


def test_a_save_that_changes_nothing_releases_the_lock(app: Flask, tmp_path) -> None:
    with app.app_context():
        result = service.apply_changes("mqtt", {"host": "localhost"}, "t")
        assert result.changed == [] and result.outcome.status == "unchanged"
        other = sqlite3.connect(tmp_path / "instance" / "console.db", timeout=0)
        try:
            other.execute("BEGIN IMMEDIATE")      # "database is locked" while the lock is held
            other.rollback()
        finally:
            other.close()
