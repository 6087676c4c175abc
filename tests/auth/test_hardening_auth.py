"""Login and session: no open redirect through `next`, login attempts rate limited per user and per
address through the database (shared by workers and replicas), an unknown user costs a password hash,
logout ends the session on the server, CSRF tokens expire, the session cookie's Secure flag."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from flask import Flask

from console import create_app
from tests.conftest import ADMIN_PASSWORD, _create, add_user, login, make_app
from tests.db_fixtures import db_app  # noqa: F401 - fixture

EVIL_NEXT = [
    "//evil.example", "///evil.example", "/\\evil.example", "\\\\evil.example", "/\t/evil.example",
    "/\n/evil.example", "/\r\n/evil.example", "/\r\nSet-Cookie:x=1", "https://evil.example/",
    "http:/evil.example", "javascript:alert(1)", "evil.example", "/ /evil.example", "/\x0b/evil.example",
    " //evil.example", "/\\/evil.example", "//evil.example/%2F..", "\x00//evil.example",
    "/settings\r\nLocation: //evil.example",
]
GOOD_NEXT = ["/audit", "/audit?actor=admin&page=2", "/settings/messaging#kafka", "/adapters?page=1"]


def _login(client, next_value: str | None = None, password: str = ADMIN_PASSWORD, user: str = "admin"):
    return client.post("/login", query_string={"next": next_value} if next_value is not None else None,
                       data={"username": user, "password": password})


@pytest.mark.parametrize("target", EVIL_NEXT)
def test_next_never_leaves_the_site(app: Flask, target: str) -> None:
    add_user(app, "admin", "admin", ADMIN_PASSWORD)
    response = _login(app.test_client(), target)
    assert response.status_code in (302, 400), response.status_code
    if response.status_code == 302:
        assert response.headers["Location"] == "/settings/messaging"


@pytest.mark.parametrize("target", GOOD_NEXT)
def test_same_site_next_is_kept(app: Flask, target: str) -> None:
    add_user(app, "admin", "admin", ADMIN_PASSWORD)
    response = _login(app.test_client(), target)
    assert response.status_code == 302 and response.headers["Location"] == target


def test_login_required_pages_send_a_relative_next(app: Flask) -> None:
    response = app.test_client().get("/audit?actor=x")
    assert response.status_code == 302 and "next=" in response.headers["Location"]


def _fail(client, user: str = "admin", n: int = 1) -> list[int]:
    return [_login(client, password="wrong-password", user=user).status_code for _ in range(n)]


def test_failed_logins_are_limited_per_user_with_a_clear_message(app: Flask) -> None:
    add_user(app, "admin", "admin", ADMIN_PASSWORD)
    client = app.test_client()
    assert _fail(client, n=5) == [401] * 5
    response = _login(client, password="wrong-password")
    assert response.status_code == 429
    assert "Too many failed log-ins" in response.get_data(as_text=True)
    assert re.search(r"Try again in \d+ seconds", response.get_data(as_text=True))
    assert int(response.headers["Retry-After"]) > 0
    assert _login(client).status_code == 429            # the right password too, until the window ends
    assert _fail(client, user="someone-else") == [401]  # other users are not locked out
    assert _login(client, user="ADMIN ", password="x").status_code == 429   # same name, other spelling


def test_successful_logins_do_not_count(app: Flask) -> None:
    add_user(app, "admin", "admin", ADMIN_PASSWORD)
    for _ in range(12):
        assert _login(app.test_client()).status_code == 302


def test_failed_logins_are_limited_per_address(app: Flask) -> None:
    client = app.test_client()
    statuses = [_fail(client, user=f"user{i}")[0] for i in range(20)]
    assert statuses == [401] * 20
    assert _fail(client, user="fresh-name") == [429]
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "127.0.0.2"
    assert _fail(other, user="fresh-name") == [401]


def test_limits_are_shared_by_workers_and_replicas(db_app: Flask, tmp_path: Path) -> None:  # noqa: F811
    """Two app instances on one database (two workers, or two replicas) count the same attempts."""
    other = _create(tmp_path / "replica", SQLALCHEMY_DATABASE_URI=db_app.config["SQLALCHEMY_DATABASE_URI"])
    add_user(db_app, "admin", "admin", ADMIN_PASSWORD)
    first, second = db_app.test_client(), other.test_client()
    assert _fail(first, n=3) + _fail(second, n=2) == [401] * 5
    assert _fail(first) == [429] and _fail(second) == [429]
    with other.app_context():
        from console.extensions import db
        db.engine.dispose()


def test_the_limits_are_configurable(tmp_path: Path) -> None:
    app = make_app(tmp_path / "i", LOGIN_LIMIT_PER_USER="2 per minute")
    add_user(app, "admin", "admin", ADMIN_PASSWORD)
    assert _fail(app.test_client(), n=3) == [401, 401, 429]


def test_an_unknown_user_costs_one_password_hash_like_a_wrong_password(
        app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    add_user(app, "admin", "admin", ADMIN_PASSWORD)
    client = app.test_client()
    _login(client, user="nobody", password="x")       # the dummy hash is made once, up front
    calls: list[int] = []
    real = hashlib.scrypt

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", counting)
    assert _login(client, user="nobody-else", password="x").status_code == 401
    unknown = len(calls)
    calls.clear()
    assert _login(client, user="admin", password="wrong").status_code == 401
    assert unknown == len(calls) == 1


def _session_cookie(client) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def test_logout_ends_the_session_on_the_server(app: Flask) -> None:
    add_user(app, "admin", "admin", ADMIN_PASSWORD)
    client = login(app.test_client(), "admin", ADMIN_PASSWORD)
    stolen = _session_cookie(client)
    assert client.get("/settings/messaging").status_code == 200
    assert client.post("/logout").status_code == 302
    replay = app.test_client()
    replay.set_cookie("session", stolen)
    response = replay.get("/settings/messaging")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    api = replay.get("/api/v1/brokers")
    assert api.status_code == 401
    again = login(app.test_client(), "admin", ADMIN_PASSWORD)
    assert again.get("/settings/messaging").status_code == 200


def test_a_new_password_ends_every_session(app: Flask) -> None:
    add_user(app, "admin", "admin", ADMIN_PASSWORD)
    client = login(app.test_client(), "admin", ADMIN_PASSWORD)
    result = app.test_cli_runner().invoke(args=["users", "set-password", "admin", "--password-stdin"],
                                          input="a-new-password-2\n")
    assert result.exit_code == 0, result.output
    assert client.get("/settings/messaging").status_code == 302


def test_old_style_session_ids_are_refused(app: Flask) -> None:
    add_user(app, "admin", "admin", ADMIN_PASSWORD)
    client = app.test_client()
    with client.session_transaction() as session:
        session["_user_id"] = "1"
        session["_fresh"] = True
    assert client.get("/settings/messaging").status_code == 302


def test_csrf_tokens_expire(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import itsdangerous.timed

    app = make_app(tmp_path / "i", WTF_CSRF_ENABLED=True, WTF_CSRF_TIME_LIMIT=600)
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    add_user(app, "admin", "admin", ADMIN_PASSWORD)
    real = itsdangerous.timed.TimestampSigner.get_timestamp
    monkeypatch.setattr(itsdangerous.timed.TimestampSigner, "get_timestamp",
                        lambda self: real(self) + 601)
    response = client.post("/login", data={"username": "admin", "password": ADMIN_PASSWORD,
                                           "csrf_token": token})
    assert response.status_code == 400 and "expired" in response.get_data(as_text=True)
    monkeypatch.setattr(itsdangerous.timed.TimestampSigner, "get_timestamp", real)
    assert client.post("/login", data={"username": "admin", "password": ADMIN_PASSWORD,
                                       "csrf_token": token}).status_code == 302


def test_csrf_time_limit_is_on_by_default(app: Flask) -> None:
    assert app.config["WTF_CSRF_TIME_LIMIT"] == 8 * 3600


@pytest.mark.parametrize(("value", "secure"), [("true", True), ("false", False), (None, False)])
def test_session_cookie_secure_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    value: str | None, secure: bool) -> None:
    if value is not None:
        monkeypatch.setenv("CONSOLE_SESSION_COOKIE_SECURE", value)
    monkeypatch.setenv("CONSOLE_INSTANCE_PATH", str(tmp_path))
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'c.db'}"})
    header = app.test_client().get("/login").headers["Set-Cookie"]
    assert ("; Secure" in header) is secure
    assert "SameSite=Lax" in header and "HttpOnly" in header


def test_an_expired_token_on_an_htmx_save_reloads_the_page_with_a_message(tmp_path: Path) -> None:
    app = make_app(tmp_path / "i", WTF_CSRF_ENABLED=True)
    add_user(app, "admin", "admin", ADMIN_PASSWORD)
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    client.post("/login", data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": token})
    response = client.post("/settings/messaging/kafka", data={"host": "k"},
                           headers={"HX-Request": "true", "X-CSRFToken": "stale"})
    assert response.status_code == 400 and response.headers["HX-Refresh"] == "true"
    assert "the page was reloaded: repeat the change" in client.get("/settings/messaging").get_data(as_text=True)


def test_a_broken_limit_storage_does_not_hide_the_login(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """The limiter lets the request through (and logs) when its storage fails; the view answers."""
    import sqlalchemy as sa

    from console.ratelimit import DatabaseStorage

    def broken(self, *args, **kwargs):
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("database is down"))

    add_user(app, "admin", "admin", ADMIN_PASSWORD)
    for name in ("incr", "get", "get_expiry"):
        monkeypatch.setattr(DatabaseStorage, name, broken)
    assert _login(app.test_client()).status_code == 302


@pytest.mark.parametrize("proxies", [0, 1])
def test_behind_a_reverse_proxy_the_client_address_counts(tmp_path: Path, proxies: int) -> None:
    """CONSOLE_PROXIES=1 behind one TLS proxy: the per-address limit and the audit log see the
    address the proxy passes in X-Forwarded-For; without it,
    a client's own X-Forwarded-For is ignored and the connection's address counts."""
    app = make_app(tmp_path / "i", PROXIES=proxies, LOGIN_LIMIT_PER_ADDRESS="2 per minute")
    add_user(app, "admin", "admin", ADMIN_PASSWORD)
    proxy = app.test_client()
    proxy.environ_base["REMOTE_ADDR"] = "10.0.0.1"

    def fail(client_address: str) -> int:
        return proxy.post("/login", data={"username": "admin", "password": "wrong"},
                          headers={"X-Forwarded-For": client_address,
                                   "X-Forwarded-Proto": "https"}).status_code

    assert [fail("203.0.113.7"), fail("203.0.113.7")] == [401, 401]
    assert fail("203.0.113.8") == (401 if proxies else 429)
    ok = proxy.post("/login", data={"username": "admin", "password": ADMIN_PASSWORD},
                    headers={"X-Forwarded-For": "203.0.113.9"})
    assert ok.status_code == (302 if proxies else 429)
    if proxies:
        proxy.patch("/api/v1/brokers/mqtt", json={"keepalive": 33},
                    headers={"X-Forwarded-For": "203.0.113.9"})
        with app.app_context():
            from console.extensions import db
            from console.models import AuditEntry
            remotes = db.session.execute(db.select(AuditEntry.action, AuditEntry.remote).where(
                AuditEntry.outcome == "applied")).all()
        # the change and the sign-in before it (every sign-in is audited) both see the proxied address
        assert sorted(remotes) == [("sign_in", "203.0.113.9"), ("update", "203.0.113.9")]
