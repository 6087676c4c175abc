"""OpenID Connect sign-in against a real provider (npm oidc-provider run by node, tests/auth/conftest.py):
admins, viewers and group-less users; a tampered state, a replayed code, an ID token for another
audience, an expired one, a rotated signing key, the provider down; logging out at the provider too;
Test sign-in. The browser of these tests is `requests` for the provider and Flask's test client for
the console (tests/browser/test_oidc_browser.py runs the whole flow in Chromium)."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import identitylab
import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.auth.conftest import PUBLIC, oidc_config, provider_login, start_provider
from tests.conftest import add_user, login, make_app


@pytest.fixture
def oidc_app(tmp_path: Path, oidc_lab: identitylab.Oidc) -> Flask:
    return make_app(tmp_path / "instance", **oidc_config(oidc_lab))


def _start(console: FlaskClient, query: str = "") -> str:
    response = console.get("/login/oidc" + query)
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    return response.headers["Location"]


def _callback(console: FlaskClient, url: str):
    parts = urlsplit(url)
    assert url.startswith(PUBLIC + "/login/oidc/callback"), url
    return console.get(parts.path + "?" + parts.query)


def sign_in(app: Flask, name: str, password: str):
    console = app.test_client()
    callback = provider_login(_start(console), name, password)
    assert isinstance(callback, str), getattr(callback, "text", callback)
    return console, _callback(console, callback), callback


def _sign_ins(app: Flask) -> list[tuple[str, str, str, dict]]:
    from console.extensions import db
    from console.models import AuditEntry
    with app.app_context():
        rows = db.session.execute(db.select(AuditEntry).where(AuditEntry.action == "sign_in")
                                  .order_by(AuditEntry.id)).scalars()
        return [(r.actor, r.outcome, r.summary, r.changes[0]) for r in rows]


def _user(app: Flask, name: str):
    from console.auth import users as accounts
    with app.app_context():
        user = accounts.find(name)
        return None if user is None else (user.role, user.source, user.groups)


def test_the_authorization_request_uses_pkce_state_and_nonce(oidc_app: Flask, oidc_lab) -> None:
    query = parse_qs(urlsplit(_start(oidc_app.test_client())).query)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"][0]
    assert query["state"][0] and query["nonce"][0] and query["response_type"] == ["code"]
    assert query["redirect_uri"] == [PUBLIC + "/login/oidc/callback"]
    assert query["scope"] == ["openid profile email groups"]


def test_an_admin_and_a_viewer_sign_in_with_their_groups(oidc_app: Flask) -> None:
    admin, response, _ = sign_in(oidc_app, "alice", "alice-password")
    assert response.status_code == 302
    assert admin.get("/users").status_code == 200
    assert _user(oidc_app, "alice") == ("admin", "oidc", ["console-admins", "console-viewers"])
    viewer, response, _ = sign_in(oidc_app, "victor", "victor-password")
    assert response.status_code == 302
    assert viewer.get("/users").status_code == 403
    assert viewer.get("/settings/messaging").status_code == 200
    audited = _sign_ins(oidc_app)
    assert [(a, o) for a, o, _s, _c in audited] == [("alice", "applied"), ("victor", "applied")]
    assert audited[1][3] == {"provider": "oidc", "groups": ["console-viewers"], "role": "viewer"}
    # the user has no local password
    response = oidc_app.test_client().post("/login", data={"username": "alice", "password": ""})
    assert response.status_code == 400


def test_a_wrong_password_stays_at_the_provider(oidc_app: Flask) -> None:
    response = provider_login(_start(oidc_app.test_client()), "alice", "wrong")
    assert not isinstance(response, str) and response.status_code == 401


def test_a_group_less_user_is_refused_with_what_to_ask_for(oidc_app: Flask) -> None:
    console, response, _ = sign_in(oidc_app, "nora", "nora-password")
    assert response.status_code == 403
    page = response.get_data(as_text=True)
    assert "none of the groups" in page and "console-admins" in page
    assert console.get("/settings/messaging").status_code == 302
    assert _sign_ins(oidc_app)[-1][:2] == ("nora", "rejected")


def test_a_tampered_state_is_refused(oidc_app: Flask) -> None:
    console = oidc_app.test_client()
    callback = provider_login(_start(console), "alice", "alice-password")
    parts = urlsplit(callback)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query["state"] = query["state"][:-2] + "xy"
    response = console.get(parts.path + "?" + urlencode(query))
    assert response.status_code == 400
    assert "state does not match" in response.get_data(as_text=True)
    assert console.get("/settings/messaging").status_code == 302
    assert _user(oidc_app, "alice") is None


def test_a_replayed_code_is_refused(oidc_app: Flask) -> None:
    first, response, callback = sign_in(oidc_app, "alice", "alice-password")
    assert response.status_code == 302
    # the same callback again in another browser that started its own sign-in: the code is burnt
    other = oidc_app.test_client()
    state = parse_qs(urlsplit(_start(other)).query)["state"][0]
    parts = urlsplit(callback)
    code = parse_qs(parts.query)["code"][0]
    response = other.get(parts.path + "?" + urlencode({"code": code, "state": state}))
    assert response.status_code == 400
    assert "invalid_grant" in response.get_data(as_text=True)
    assert other.get("/settings/messaging").status_code == 302
    # and the very same URL again in the first browser: its sign-in is over
    assert _callback(first, callback).status_code == 400


def test_an_id_token_for_another_audience_does_not_verify(oidc_app: Flask, oidc_lab, tmp_path: Path) -> None:
    """A genuine ID token of the same provider, made for another client, is refused by the console's
    verification (the one its callback runs)."""
    from authlib.common.security import generate_token
    from authlib.integrations.requests_client import OAuth2Session
    from joserfc.errors import InvalidClaimError

    from console.auth import oidc

    meta = __import__("requests").get(oidc_lab.issuer + "/.well-known/openid-configuration", timeout=5).json()
    other = OAuth2Session("other-app", "other-app-secret", scope="openid groups",
                          redirect_uri=PUBLIC + "/login/oidc/callback", code_challenge_method="S256")
    verifier = generate_token(48)
    url, _state = other.create_authorization_url(meta["authorization_endpoint"], nonce="nonce-1",
                                                 code_verifier=verifier)
    callback = provider_login(url, "alice", "alice-password")
    token = other.fetch_token(meta["token_endpoint"], authorization_response=callback,
                              code_verifier=verifier)
    with oidc_app.test_request_context():
        with pytest.raises(InvalidClaimError, match="aud"):
            oidc.verify(oidc_app, token, "nonce-1")
    # the same token verifies for the client it was made for, and not with another sign-in's nonce
    other_app = make_app(tmp_path / "other", **oidc_config(oidc_lab, OIDC_CLIENT_ID="other-app"))
    with other_app.test_request_context():
        assert oidc.verify(other_app, token, "nonce-1")["aud"] == "other-app"
        with pytest.raises(InvalidClaimError, match="nonce"):
            oidc.verify(other_app, token, "another-nonce")


def test_an_expired_id_token_is_refused(tmp_path: Path) -> None:
    """A provider whose clock is behind issues ID tokens that expired before they arrive."""
    lab = start_provider(tmp_path / "late", clock_offset=-(60 + 60 + 60), id_token_ttl=60)
    try:
        app = make_app(tmp_path / "i", **oidc_config(lab))
        console, response, _ = sign_in(app, "alice", "alice-password")
        assert response.status_code == 400
        assert "ExpiredTokenError" in response.get_data(as_text=True)
        assert console.get("/settings/messaging").status_code == 302
        assert _user(app, "alice") is None
    finally:
        lab.stop()


def test_a_rotated_signing_key_is_followed(tmp_path: Path) -> None:
    lab = start_provider(tmp_path / "rotating")
    try:
        app = make_app(tmp_path / "i", **oidc_config(lab))
        _console, response, _ = sign_in(app, "alice", "alice-password")
        assert response.status_code == 302
        old = __import__("requests").get(lab.issuer + "/jwks", timeout=5).json()["keys"][0]["kid"]
        lab.rotate_key()
        new = __import__("requests").get(lab.issuer + "/jwks", timeout=5).json()["keys"][0]["kid"]
        assert new != old
        console, response, _ = sign_in(app, "victor", "victor-password")
        assert response.status_code == 302, response.get_data(as_text=True)
        assert console.get("/settings/messaging").status_code == 200
    finally:
        lab.stop()


def test_the_provider_down_gives_a_clear_page_and_local_log_in_stays(tmp_path: Path) -> None:
    lab = start_provider(tmp_path / "down")
    app = make_app(tmp_path / "i", **oidc_config(lab, LOCAL_LOGIN=False, BREAK_GLASS_USER="rescue"))
    add_user(app, "rescue", "admin", "rescue-password-1")
    console = app.test_client()
    callback = provider_login(_start(console), "alice", "alice-password")
    lab.stop()
    response = _callback(console, callback)
    assert response.status_code == 503
    assert "does not answer" in response.get_data(as_text=True)
    # a fresh console process, the provider still down: the start gives the same page
    fresh = make_app(tmp_path / "j", **oidc_config(lab))
    response = fresh.test_client().get("/login/oidc")
    assert response.status_code == 503 and "does not answer" in response.get_data(as_text=True)
    login(app.test_client(), "rescue", "rescue-password-1")


def test_logging_out_ends_the_provider_session_too(oidc_app: Flask, oidc_lab) -> None:
    console, response, _ = sign_in(oidc_app, "victor", "victor-password")
    assert response.status_code == 302
    response = console.post("/logout")
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith(oidc_lab.issuer + "/session/end")
    query = parse_qs(urlsplit(location).query)
    assert query["post_logout_redirect_uri"] == [PUBLIC + "/login"] and query["id_token_hint"]
    assert console.get("/settings/messaging").status_code == 302


def test_test_sign_in_shows_claims_groups_and_role_without_signing_in(oidc_app: Flask) -> None:
    add_user(oidc_app, "admin", "admin", "admin-password-1")
    admin = login(oidc_app.test_client(), "admin", "admin-password-1")
    callback = provider_login(_start(admin, "?test=1"), "nora", "nora-password")
    response = _callback(admin, callback)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "no role" in page and "preferred_username" in page
    assert "the mapping names “console-admins”, which is not among the groups received" in page
    assert admin.get("/users").status_code == 200          # still the admin
    assert _user(oidc_app, "nora") is None
    # viewers may not run it
    add_user(oidc_app, "v", "viewer", "viewer-password-1")
    viewer = login(oidc_app.test_client(), "v", "viewer-password-1")
    assert viewer.get("/login/oidc?test=1").status_code == 403


def test_a_case_difference_is_named_by_test_sign_in(tmp_path: Path, oidc_lab) -> None:
    app = make_app(tmp_path / "i", **oidc_config(oidc_lab, ROLE_MAPPING="admin=Console-Admins"))
    add_user(app, "admin", "admin", "admin-password-1")
    admin = login(app.test_client(), "admin", "admin-password-1")
    page = _callback(admin, provider_login(_start(admin, "?test=1"), "alice", "alice-password")
                     ).get_data(as_text=True)
    assert "differ in upper and lower case" in page
