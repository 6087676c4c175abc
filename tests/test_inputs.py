"""The input check runs before every other before_request hook, so nothing that parses the form
(CSRF), counts log-ins (the rate limiter's keys) or loads the session's user meets a NUL first:
every form of every page, with a valid CSRF token, on PostgreSQL (whose text cannot hold a NUL)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import ADMIN_PASSWORD, add_user
from tests.db_fixtures import _pg_app
from tests.test_hardening_input import WRITE, _routes, _url


@pytest.fixture
def csrf_pg_app(tmp_path: Path) -> Iterator[Flask]:
    """A console app on PostgreSQL with CSRF protection on, as in production."""
    app = _pg_app(tmp_path / "instance-pg", WTF_CSRF_ENABLED=True, PROXIES=1)
    yield app
    with app.app_context():
        from console.extensions import db
        db.session.remove()
        db.engine.dispose()


def _token(client: FlaskClient) -> str:
    page = client.get("/login").get_data(as_text=True)
    found = re.search(r"\"X-CSRFToken\": \"([^\"]+)\"", page)
    assert found, page[:500]
    return found.group(1)


def _signed_in(app: Flask) -> tuple[FlaskClient, str]:
    add_user(app, "admin", "admin", ADMIN_PASSWORD)
    client = app.test_client()
    token = _token(client)
    response = client.post("/login", data={"csrf_token": token, "username": "admin",
                                           "password": ADMIN_PASSWORD})
    assert response.status_code == 302, response.data[:300]
    return client, _token(client)


@pytest.mark.parametrize("field", ["username", "password", "name", "host", "q"])
def test_login_with_a_nul_and_a_valid_csrf_token_is_400(csrf_pg_app: Flask, field: str) -> None:
    client = csrf_pg_app.test_client()
    data = {"csrf_token": _token(client), "username": "bar", "password": "x", field: "bar\x00admin"}
    for content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        response = client.post("/login", data=data, content_type=content_type)
        assert response.status_code == 400, (content_type, response.data[:300])
        assert b"NUL byte" in response.data


def test_every_form_of_every_page_refuses_a_nul_with_a_valid_csrf_token(csrf_pg_app: Flask) -> None:
    client, token = _signed_in(csrf_pg_app)
    tried = 0
    for rule, method, converters in _routes(csrf_pg_app):
        if method not in WRITE or rule.startswith("/api/"):
            continue
        url = _url(rule, converters)
        for content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            data = {"csrf_token": token, "username": "a\x00b", "name": "a\x00b", "host": "a\x00b",
                    "value": "a\x00b", "confirm": "1"}
            response = client.open(url, method=method, data=data, content_type=content_type,
                                   headers={"X-CSRFToken": token})
            assert response.status_code == 400, (method, rule, content_type, response.status_code)
            assert b"NUL byte" in response.data, (method, rule, response.data[:300])
            tried += 1
    assert tried >= 20
    assert client.get("/settings/messaging").status_code == 200      # still signed in


def test_the_rate_limiters_address_key_is_checked_too(csrf_pg_app: Flask) -> None:
    client = csrf_pg_app.test_client()
    token = _token(client)
    data = {"csrf_token": token, "username": "bar", "password": "x"}
    refused = client.post("/login", data=data, headers={"X-Forwarded-For": "10.0.0.1\x00"})
    assert refused.status_code == 400 and b"client address" in refused.data
    long = client.post("/login", data=data, headers={"X-Forwarded-For": "1" * 5000})
    assert long.status_code == 400 and b"longer than 64" in long.data, long.data[:300]
    v6 = client.post("/login", data=data, headers={"X-Forwarded-For": "fe80::1:2:3:4%eth0"})
    assert v6.status_code == 401, v6.data[:300]
