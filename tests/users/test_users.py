"""The users page (admins only): create, change role, set or generate a password, remove — with
field-level errors, audit entries, CSRF, and the last admin kept."""
from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import ADMIN_PASSWORD, VIEWER_PASSWORD, add_user, login
from tests.db_fixtures import _pg_app  # imported at collection: it reads CONSOLE_TEST_PG_URL

HX = {"HX-Request": "true"}


def user_id(app: Flask, name: str) -> int:
    from console.auth import users

    with app.app_context():
        return users.find(name).id


def audit(app: Flask, action: str) -> list[tuple[str, str, str]]:
    from console.extensions import db
    from console.models import AuditEntry

    with app.app_context():
        rows = db.session.execute(db.select(AuditEntry).where(AuditEntry.action == action)
                                  .order_by(AuditEntry.id)).scalars()
        return [(r.outcome, r.actor, r.summary) for r in rows]


def can_log_in(app: Flask, name: str, password: str) -> bool:
    response = app.test_client().post("/login", data={"username": name, "password": password})
    return response.status_code == 302


def test_admin_creates_users_with_a_typed_or_a_generated_password(app: Flask,
                                                                  admin_client: FlaskClient) -> None:
    page = admin_client.get("/users")
    assert page.status_code == 200 and "Create a user" in page.get_data(as_text=True)
    made = admin_client.post("/users", data={"username": "ops", "role": "viewer",
                                             "password": "ops-password-1"})
    html = made.get_data(as_text=True)
    assert made.status_code == 200 and "Created viewer user ops." in html
    assert 'data-user="ops"' in html and "secret-once" not in html
    assert can_log_in(app, "ops", "ops-password-1")

    generated = admin_client.post("/users", data={"username": "oncall", "role": "admin"},
                                  headers=HX)
    html = generated.get_data(as_text=True)
    assert generated.status_code == 201 and "shown once" in html
    password = re.search(r'<code class="secret-once">([^<]+)</code>', html).group(1)
    assert len(password) >= 16 and can_log_in(app, "oncall", password)
    assert password not in admin_client.get("/users").get_data(as_text=True)
    assert [a[:2] for a in audit(app, "create_user")] == [("applied", "admin"), ("applied", "admin")]
    assert "Created admin user oncall" in audit(app, "create_user")[1][2]
    assert password not in str(audit(app, "create_user"))


def test_invalid_input_is_refused_next_to_its_field_and_saves_nothing(
        app: Flask, admin_client: FlaskClient) -> None:
    cases = [({"username": "", "role": "viewer"}, "username", "1 to 80 characters"),
             ({"username": "x" * 81, "role": "viewer"}, "username", "1 to 80 characters"),
             ({"username": "admin", "role": "viewer"}, "username", "exists already"),
             ({"username": "new", "role": "root"}, "role", "Choose a role"),
             ({"username": "new", "role": "viewer", "password": "short"}, "password",
              "at least 8 characters")]
    for data, field, text in cases:
        response = admin_client.post("/users", data=data)
        html = response.get_data(as_text=True)
        assert response.status_code == 422, data
        error = re.search(rf'<p class="error" id="new-{field}-error">([^<]+)</p>', html)
        assert error and text in error.group(1), (data, html[-3000:])
        assert f'aria-describedby="new-{field}-error"' in html or \
            f'aria-describedby="new-{field}-help new-{field}-error"' in html
    both = admin_client.post("/users", data={"username": "", "role": "x"}, headers=HX)
    assert both.status_code == 422 and "new-username-error" in both.get_data(as_text=True) \
        and "new-role-error" in both.get_data(as_text=True)
    from console.auth import users
    with app.app_context():
        assert [u.username for u in users.all_users()] == ["admin"]
    assert {a[0] for a in audit(app, "create_user")} == {"rejected"}


def test_roles_change_but_the_last_admin_stays(app: Flask, admin_client: FlaskClient) -> None:
    add_user(app, "viewer", "viewer", VIEWER_PASSWORD)
    viewer = login(app.test_client(), "viewer", VIEWER_PASSWORD)
    assert viewer.get("/settings/messaging").status_code == 200
    vid, aid = user_id(app, "viewer"), user_id(app, "admin")

    last = admin_client.post(f"/users/{aid}/role", data={"role": "viewer"})
    assert last.status_code == 422
    assert "admin is the last admin" in last.get_data(as_text=True)
    assert f'id="user-{aid}-role-error"' in last.get_data(as_text=True)

    promoted = admin_client.post(f"/users/{vid}/role", data={"role": "admin"})
    assert promoted.status_code == 200 and "viewer is now admin." in promoted.get_data(as_text=True)
    # a role change ends the user's sessions: they log in again with the new role
    assert viewer.get("/settings/messaging").status_code == 302
    assert admin_client.post(f"/users/{vid}/role", data={"role": "nobody"}).status_code == 422

    # with a second admin, an admin may step down: off the admin-only page, as a viewer now
    down = admin_client.post(f"/users/{aid}/role", data={"role": "viewer"})
    assert down.status_code == 303 and down.headers["Location"].endswith("/settings/messaging")
    assert admin_client.get("/users").status_code == 403
    assert admin_client.get("/settings/messaging").status_code == 200
    outcomes = audit(app, "change_role")
    assert [o[0] for o in outcomes] == ["rejected", "applied", "rejected", "applied"]
    assert "from viewer to admin" in outcomes[1][2] and "last admin" in outcomes[0][2]


def test_reset_password_typed_or_generated_ends_the_sessions(app: Flask,
                                                              admin_client: FlaskClient) -> None:
    add_user(app, "viewer", "viewer", VIEWER_PASSWORD)
    viewer = login(app.test_client(), "viewer", VIEWER_PASSWORD)
    vid = user_id(app, "viewer")
    short = admin_client.post(f"/users/{vid}/password", data={"password": "short"})
    assert short.status_code == 422
    assert f'id="user-{vid}-password-error"' in short.get_data(as_text=True)
    assert can_log_in(app, "viewer", VIEWER_PASSWORD)

    typed = admin_client.post(f"/users/{vid}/password", data={"password": "brand-new-pw-1"})
    assert typed.status_code == 200 and "Password of viewer changed" in typed.get_data(as_text=True)
    assert viewer.get("/settings/messaging").status_code == 302
    assert not can_log_in(app, "viewer", VIEWER_PASSWORD) and can_log_in(app, "viewer", "brand-new-pw-1")

    generated = admin_client.post(f"/users/{vid}/password", data={"password": ""})
    password = re.search(r'<code class="secret-once">([^<]+)</code>',
                         generated.get_data(as_text=True)).group(1)
    assert can_log_in(app, "viewer", password) and not can_log_in(app, "viewer", "brand-new-pw-1")

    own = admin_client.post(f"/users/{user_id(app, 'admin')}/password",
                            data={"password": "admin-new-pw-1"})
    assert own.status_code == 200 and admin_client.get("/users").status_code == 200
    assert [o[0] for o in audit(app, "reset_password")] == ["rejected", "applied", "applied", "applied"]
    assert password not in str(audit(app, "reset_password"))


def test_remove_users_but_never_the_last_admin(app: Flask, admin_client: FlaskClient) -> None:
    add_user(app, "viewer", "viewer", VIEWER_PASSWORD)
    viewer = login(app.test_client(), "viewer", VIEWER_PASSWORD)
    aid, vid = user_id(app, "admin"), user_id(app, "viewer")
    refused = admin_client.post(f"/users/{aid}/remove", headers=HX)
    assert refused.status_code == 422 and "last admin and cannot be removed" in refused.get_data(as_text=True)
    asked = admin_client.post(f"/users/{vid}/remove")            # without JavaScript: a question first
    text = asked.get_data(as_text=True)
    assert asked.status_code == 200 and "<h1>Remove user viewer?</h1>" in text
    assert 'name="confirm" value="yes"' in text and 'href="/users">Cancel</a>' in text
    assert can_log_in(app, "viewer", VIEWER_PASSWORD)                # nothing removed yet
    gone = admin_client.post(f"/users/{vid}/remove", data={"confirm": "yes"})
    assert gone.status_code == 200 and "Removed viewer." in gone.get_data(as_text=True)
    assert viewer.get("/settings/messaging").status_code == 302
    assert not can_log_in(app, "viewer", VIEWER_PASSWORD)
    assert admin_client.post(f"/users/{vid}/remove").status_code == 404
    assert admin_client.post("/users/99999999999/remove").status_code == 404

    add_user(app, "second", "admin", "second-admin-pw")
    myself = admin_client.post(f"/users/{aid}/remove", headers=HX)
    assert myself.headers["HX-Redirect"].endswith("/login")
    assert admin_client.get("/users").status_code == 302
    assert [o[0] for o in audit(app, "remove_user")] == ["rejected", "applied", "applied"]


def test_viewers_cannot_and_csrf_is_required(app: Flask, viewer_client: FlaskClient,
                                             csrf_app: Flask) -> None:
    assert viewer_client.get("/users").status_code == 403
    assert viewer_client.post("/users", data={"username": "x", "role": "admin"}).status_code == 403
    assert "/users" not in viewer_client.get("/settings/messaging").get_data(as_text=True)
    add_user(csrf_app, "admin", "admin", ADMIN_PASSWORD)
    client = csrf_app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    assert client.post("/login", data={"username": "admin", "password": ADMIN_PASSWORD,
                                       "csrf_token": token}).status_code == 302
    assert client.post("/users", data={"username": "x", "role": "admin",
                                       "password": "long-enough-1"}).status_code == 400
    token = re.search(r'name="csrf_token" value="([^"]+)"',
                      client.get("/users").get_data(as_text=True)).group(1)
    made = client.post("/users", data={"username": "x", "role": "admin",
                                       "password": "long-enough-1", "csrf_token": token})
    assert made.status_code == 200 and "Created admin user x." in made.get_data(as_text=True)
    assert user_id(csrf_app, "x")


def test_two_admins_demoting_each_other_at_once_leave_one_admin(tmp_path) -> None:
    """On PostgreSQL, where requests really run at once: the admin rows are locked while counted."""
    import threading

    from console.auth import users as accounts
    from console.extensions import db

    app = _pg_app(tmp_path / "instance-pg")
    try:
        for round_ in range(8):
            with app.app_context():
                for u in accounts.all_users():
                    db.session.delete(u)
                db.session.commit()
            add_user(app, f"a{round_}", "admin", ADMIN_PASSWORD)
            add_user(app, f"b{round_}", "admin", ADMIN_PASSWORD)
            start = threading.Barrier(2)
            outcomes: list[str] = []

            def demote(name: str, start: threading.Barrier = start, outcomes: list[str] = outcomes) -> None:
                with app.app_context():
                    user = accounts.find(name)
                    start.wait()
                    try:
                        accounts.set_role(user, "viewer", actor="race", origin="test")
                        outcomes.append("applied")
                    except accounts.UserError:
                        outcomes.append("refused")
                    except Exception as exc:  # noqa: BLE001 - reported by the assertion
                        outcomes.append(repr(exc)[:300])
                    finally:
                        db.session.remove()

            threads = [threading.Thread(target=demote, args=(n,)) for n in (f"a{round_}", f"b{round_}")]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            with app.app_context():
                admins = [u.username for u in accounts.all_users() if u.role == "admin"]
            assert sorted(outcomes) == ["applied", "refused"] and len(admins) == 1, (round_, admins)
    finally:
        with app.app_context():
            db.engine.dispose()
