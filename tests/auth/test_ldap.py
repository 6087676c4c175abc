"""LDAP sign-in against a real slapd (tests/auth/conftest.py): admins, viewers and group-less users,
wrong passwords, a user taken out of a group between two sign-ins, LDAPS and StartTLS with a CA file,
the directory stopped (a clear 503, the break-glass admin still signs in) and names with filter
characters. Every sign-in is audited with the provider and the groups."""
from __future__ import annotations

import identitylab
from flask import Flask

from tests.auth.conftest import ldap_config
from tests.conftest import add_user, make_app
from tests.conftest import login as app_login


def _sign_in(app: Flask, name: str, password: str):
    client = app.test_client()
    return client, client.post("/login", data={"username": name, "password": password})


def _user(app: Flask, name: str):
    from console.auth import users as accounts
    with app.app_context():
        user = accounts.find(name)
        return None if user is None else (user.role, user.source, user.groups, user.session_generation)


def _sign_ins(app: Flask) -> list[tuple[str, str, str, dict]]:
    from console.extensions import db
    from console.models import AuditEntry
    with app.app_context():
        rows = db.session.execute(db.select(AuditEntry).where(AuditEntry.action == "sign_in")
                                  .order_by(AuditEntry.id)).scalars()
        return [(r.actor, r.outcome, r.summary, r.changes[0]) for r in rows]


def test_an_admin_and_a_viewer_sign_in_with_their_groups_roles(ldap_app: Flask) -> None:
    client, response = _sign_in(ldap_app, "alice", "alice-password")
    assert response.status_code == 302
    assert client.get("/users").status_code == 200                 # admin page
    assert _user(ldap_app, "alice")[:3] == ("admin", "ldap", ["console-admins", "console-viewers"])
    viewer, response = _sign_in(ldap_app, "victor", "victor-password")
    assert response.status_code == 302
    assert viewer.get("/users").status_code == 403
    assert _user(ldap_app, "victor")[:3] == ("viewer", "ldap", ["console-viewers"])
    audited = _sign_ins(ldap_app)
    assert [(a, o) for a, o, _s, _c in audited] == [("alice", "applied"), ("victor", "applied")]
    assert audited[0][3] == {"provider": "ldap", "groups": ["console-admins", "console-viewers"],
                             "role": "admin"}
    assert "through LDAP as admin" in audited[0][2]


def test_a_user_in_no_mapped_group_is_refused_with_what_to_ask_for(ldap_app: Flask) -> None:
    client, response = _sign_in(ldap_app, "nora", "nora-password")
    assert response.status_code == 403
    page = response.get_data(as_text=True)
    assert "none of the groups" in page and "console-admins" in page and "console-viewers" in page
    assert client.get("/settings/messaging").status_code == 302     # not signed in
    assert _user(ldap_app, "nora") is None
    assert _sign_ins(ldap_app)[-1][:2] == ("nora", "rejected")
    assert _sign_ins(ldap_app)[-1][3]["provider"] == "ldap"


def test_role_default_viewer_lets_a_group_less_user_in(tmp_path, ldap_lab) -> None:
    app = make_app(tmp_path / "i", **ldap_config(ldap_lab, ROLE_DEFAULT="viewer"))
    _client, response = _sign_in(app, "nora", "nora-password")
    assert response.status_code == 302
    assert _user(app, "nora")[:2] == ("viewer", "ldap")


def test_a_wrong_password_or_an_unknown_name_is_refused_and_audited(ldap_app: Flask) -> None:
    for name, password in (("alice", "wrong-password"), ("nobody", "alice-password"), ("alice", " ")):
        _client, response = _sign_in(ldap_app, name, password)
        assert response.status_code in (400, 401), name
    assert _user(ldap_app, "alice") is None
    refused = [(a, o) for a, o, _s, _c in _sign_ins(ldap_app)]
    assert refused == [("alice", "rejected"), ("nobody", "rejected")]


def test_filter_characters_find_nothing_they_should_not(ldap_app: Flask) -> None:
    from console.auth import directory
    for name in ("*", "al*", "alice)(uid=*", "*)(|(uid=*", "alice)(|(objectClass=*)", "\\2a", "alice\x00"):
        _client, response = _sign_in(ldap_app, name, "alice-password")
        assert response.status_code in (400, 401), name
    assert directory.escape("a*)(b\\") == "a\\2a\\29\\28b\\5c"
    assert _user(ldap_app, "alice") is None


def test_removed_from_the_group_loses_the_role_at_the_next_sign_in(ldap_app: Flask,
                                                                   ldap_lab: identitylab.Ldap) -> None:
    first, response = _sign_in(ldap_app, "alice", "alice-password")
    assert first.get("/users").status_code == 200
    ldap_lab.remove_member("console-admins", "alice")
    try:
        second, response = _sign_in(ldap_app, "alice", "alice-password")
        assert response.status_code == 302
        assert _user(ldap_app, "alice")[:3] == ("viewer", "ldap", ["console-viewers"])
        assert second.get("/users").status_code == 403
        # the session opened as an admin ended when the role changed
        assert first.get("/users").status_code == 302
    finally:
        ldap_lab.add_member("console-admins", "alice")


def test_ldaps_and_starttls_with_the_ca_file(tmp_path, ldap_lab: identitylab.Ldap) -> None:
    for n, extra in enumerate(({"LDAP_URL": ldap_lab.ldaps_url, "LDAP_CA_FILE": str(ldap_lab.ca_file)},
                               {"LDAP_START_TLS": True, "LDAP_CA_FILE": str(ldap_lab.ca_file)})):
        app = make_app(tmp_path / f"tls{n}", **ldap_config(ldap_lab, **extra))
        _client, response = _sign_in(app, "victor", "victor-password")
        assert response.status_code == 302, extra
    # without the CA the directory's certificate is not trusted: a clear 503, nothing signed in
    app = make_app(tmp_path / "noca", **ldap_config(ldap_lab, LDAP_URL=ldap_lab.ldaps_url))
    _client, response = _sign_in(app, "victor", "victor-password")
    assert response.status_code == 503
    assert _user(app, "victor") is None


def test_the_directory_stopped_gives_a_clear_message_and_break_glass_still_works(
        tmp_path, ldap_lab: identitylab.Ldap) -> None:
    app = make_app(tmp_path / "i", **ldap_config(ldap_lab, LOCAL_LOGIN=False, BREAK_GLASS_USER="rescue"))
    add_user(app, "rescue", "admin", "rescue-password-1")
    add_user(app, "local-viewer", "viewer", "viewer-password-1")
    ldap_lab.stop()
    try:
        _client, response = _sign_in(app, "alice", "alice-password")
        assert response.status_code == 503
        assert "does not answer" in response.get_data(as_text=True)
        rescue, response = _sign_in(app, "rescue", "rescue-password-1")
        assert response.status_code == 302
        assert rescue.get("/users").status_code == 200
        # local passwords are off for everyone else
        _client, response = _sign_in(app, "local-viewer", "viewer-password-1")
        assert response.status_code == 503
    finally:
        ldap_lab.start()
    _client, response = _sign_in(app, "local-viewer", "viewer-password-1")
    assert response.status_code == 401
    outcomes = [(a, o, c["provider"]) for a, o, _s, c in _sign_ins(app)]
    assert ("rescue", "applied", "local") in outcomes and ("alice", "rejected", "ldap") in outcomes


def test_a_directory_user_never_takes_over_a_local_user(tmp_path, ldap_lab: identitylab.Ldap) -> None:
    app = make_app(tmp_path / "i", **ldap_config(ldap_lab))
    add_user(app, "victor", "admin", "local-password-1")
    _client, response = _sign_in(app, "victor", "victor-password")
    assert response.status_code == 403
    assert "local user named victor" in response.get_data(as_text=True)
    assert _user(app, "victor")[:2] == ("admin", "local")


def test_test_sign_in_shows_attributes_groups_and_the_role_without_signing_in(ldap_app: Flask) -> None:
    add_user(ldap_app, "admin", "admin", "admin-password-1")
    admin = app_login(ldap_app.test_client(), "admin", "admin-password-1")
    response = admin.post("/users/test-sign-in", data={"username": "nora", "password": "nora-password"})
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "no role" in page and "uid=nora,ou=people,dc=example,dc=test" in page
    assert "the mapping names “console-admins”, which is not among the groups received" in page
    response = admin.post("/users/test-sign-in", data={"username": "victor", "password": "victor-password"})
    page = response.get_data(as_text=True)
    assert 'id="test-role">viewer' in page and "console-viewers" in page
    response = admin.post("/users/test-sign-in", data={"username": "victor", "password": "wrong"})
    assert response.status_code == 422 and "password is wrong" in response.get_data(as_text=True)
    assert _user(ldap_app, "nora") is None and _user(ldap_app, "victor") is None
    assert admin.get("/users").status_code == 200                 # still the admin
    assert _sign_ins(ldap_app)[-1][0] == "admin"                   # Test sign-in signed no one in
    viewer, _ = _sign_in(ldap_app, "victor", "victor-password")
    assert viewer.get("/users/test-sign-in").status_code == 403


def test_a_token_made_by_a_directory_user_is_audited_with_the_provider(ldap_app: Flask) -> None:
    from console.extensions import db
    from console.models import AuditEntry
    admin, _ = _sign_in(ldap_app, "alice", "alice-password")
    response = admin.post("/tokens", data={"name": "ci", "role": "viewer"})
    assert response.status_code == 200
    with ldap_app.app_context():
        entry = db.session.execute(db.select(AuditEntry).where(AuditEntry.action == "create_token")
                                   ).scalar_one()
        assert entry.actor == "alice" and entry.changes == [{"provider": "ldap"}]
        assert "signed in through ldap" in entry.summary


def test_the_users_page_shows_source_groups_and_role(ldap_app: Flask) -> None:
    admin, _ = _sign_in(ldap_app, "alice", "alice-password")
    _sign_in(ldap_app, "victor", "victor-password")
    page = admin.get("/users").get_data(as_text=True)
    victor = page.split('data-user="victor"', 1)[1].split("</li>", 1)[0]
    assert "LDAP" in victor and "console-viewers" in victor and "viewer" in victor
    assert "Set password of victor" not in victor          # no local password to set
