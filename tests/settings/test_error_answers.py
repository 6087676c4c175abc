"""Error answers a page shows (issue 18 item 3): a save whose CSRF token expired shows the form again
with what was typed (not secrets) and says so, with and without htmx; a form posted from another site
is not shown back; a request over the size limit says the limit."""
from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from flask import Flask

from tests.conftest import ADMIN_PASSWORD, add_user, make_app

ORIGIN = {"Origin": "http://localhost"}


def _logged_in(app: Flask):
    add_user(app, "admin", "admin", ADMIN_PASSWORD)
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert client.post("/login", data={"username": "admin", "password": ADMIN_PASSWORD,
                                       "csrf_token": token.group(1) if token else ""}).status_code == 302
    return client


def _expired_token(client, app: Flask, monkeypatch: pytest.MonkeyPatch) -> str:
    """A CSRF token of this session issued 9 hours ago (older than the 8 h default limit)."""
    import itsdangerous.timed
    from itsdangerous import URLSafeTimedSerializer

    client.get("/settings/messaging/mqtt")
    with client.session_transaction() as session:
        raw = session["csrf_token"]
    real = itsdangerous.timed.TimestampSigner.get_timestamp
    monkeypatch.setattr(itsdangerous.timed.TimestampSigner, "get_timestamp",
                        lambda self: real(self) - 9 * 3600)
    token = URLSafeTimedSerializer(app.secret_key, salt="wtf-csrf-token").dumps(raw)
    monkeypatch.setattr(itsdangerous.timed.TimestampSigner, "get_timestamp", real)
    return token


@pytest.fixture
def csrf_app(tmp_path: Path) -> Flask:
    return make_app(tmp_path / "i", WTF_CSRF_ENABLED=True)


@pytest.fixture
def csrf_client(csrf_app: Flask):
    return _logged_in(csrf_app)


@pytest.mark.parametrize("htmx", [True, False])
def test_an_expired_save_keeps_what_was_typed_and_says_so(csrf_client, csrf_app, monkeypatch,
                                                        htmx: bool) -> None:
    token = _expired_token(csrf_client, csrf_app, monkeypatch)
    headers = {**ORIGIN, **({"HX-Request": "true"} if htmx else {})}
    response = csrf_client.post("/settings/messaging/mqtt", headers=headers, data={
        "csrf_token": token, "host": "typed.example", "port": "1884", "password": "typed-secret"})
    body = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "HX-Refresh" not in response.headers
    assert "Nothing was saved: the form had expired" in body
    assert 'value="typed.example"' in body and 'value="1884"' in body
    assert "typed-secret" not in body and "except Password: type it again" in body
    fresh = re.search(r'name="csrf_token" value="([^"]+)"', body).group(1)
    assert fresh != token
    if htmx:
        assert response.headers["Console-Swap"] == "form"
        assert "<nav" not in body                      # the section alone, swapped in place
    else:
        assert "<nav" in body                          # the whole page
    saved = csrf_client.get("/settings/messaging/mqtt").get_data(as_text=True)
    assert "typed.example" not in saved
    again = csrf_client.post("/settings/messaging/mqtt", headers=headers, data={
        "csrf_token": fresh, "host": "typed.example", "port": "1884"})
    assert again.status_code in (200, 302)
    assert "typed.example" in csrf_client.get("/settings/messaging/mqtt").get_data(as_text=True)


def test_a_form_posted_from_another_site_is_not_shown_back(csrf_client, csrf_app, monkeypatch) -> None:
    token = _expired_token(csrf_client, csrf_app, monkeypatch)
    for headers in ({"Origin": "https://evil.example"}, {}, {"Referer": "https://evil.example/x"}):
        response = csrf_client.post("/settings/messaging/mqtt", headers=headers, data={
            "csrf_token": token, "host": "evil.example"})
        assert response.status_code == 400
        assert "evil.example" not in response.get_data(as_text=True)


def test_a_request_over_the_limit_says_the_limit(tmp_path: Path) -> None:
    app = make_app(tmp_path / "i", MAX_CONTENT_LENGTH=1024 * 1024)
    client = _logged_in(app)
    for headers, marker in (({"HX-Request": "true"}, "data-error-message"), ({}, "data-error-message")):
        response = client.post("/settings/messaging/kafka/files/tls_ca", headers=headers,
                               data={"file": (io.BytesIO(b"x" * 3 * 1024 * 1024),
                                              "big.pem")})
        body = response.get_data(as_text=True)
        assert response.status_code == 413
        assert marker in body
        assert re.search(r"The request \(3\.0 MiB\) is larger than the console accepts: at most 1 MiB "
                         r"per request \(CONSOLE_MAX_CONTENT_LENGTH\)", body), body[:2000]
