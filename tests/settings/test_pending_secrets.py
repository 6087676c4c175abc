"""Secrets typed into a form that was not saved — the save guard's failed connection test, a field
error — are held on the server with the pending change and saved by "Save anyway" (issue 18 item 1),
with and without htmx; they never come back in the page, and are another user's or another
protocol's to nobody."""
from __future__ import annotations

import re
import socket

import pytest
from flask import Flask

from console.settings import service
from tests.conftest import ADMIN_PASSWORD, add_user, login

HX = {"HX-Request": "true"}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def enabled_rabbitmq(app: Flask) -> Flask:
    with app.app_context():
        result = service.apply_changes("rabbitmq", {"enabled": True, "host": "127.0.0.1",
                                                    "port": _closed_port()}, "seed", confirm=True)
        assert result.errors == {}
    return app


def _password(app: Flask) -> str | None:
    with app.app_context():
        return service.effective("rabbitmq", reveal=True).fields["password"].value


def _token(body: str) -> str:
    return re.search(r'name="pending" value="([^"]+)"', body).group(1)


@pytest.mark.parametrize("headers", [HX, {}], ids=["htmx", "no-js"])
def test_save_anyway_saves_the_password_typed_before_the_guard(enabled_rabbitmq: Flask, admin_client,
                                                                 headers: dict[str, str]) -> None:
    app = enabled_rabbitmq
    before = _password(app)
    guard = admin_client.post("/settings/messaging/rabbitmq", headers=headers,
                              data={"password": "typed-secret-1"})
    body = guard.get_data(as_text=True)
    assert guard.status_code == 409 and "Save anyway" in body
    assert "typed-secret-1" not in body
    assert "Password: what you typed is kept on the server" in body
    assert _password(app) == before
    anyway = admin_client.post("/settings/messaging/rabbitmq", headers=headers,
                               data={"pending": _token(body), "save_anyway": "1"})
    assert anyway.status_code in (200, 302), anyway.get_data(as_text=True)[:3000]
    assert _password(app) == "typed-secret-1"
    if headers:
        assert "Saved: password." in anyway.get_data(as_text=True)


def test_a_field_error_keeps_the_secret_for_the_corrected_save(enabled_rabbitmq: Flask,
                                                               admin_client) -> None:
    app = enabled_rabbitmq
    bad = admin_client.post("/settings/messaging/rabbitmq", headers=HX,
                            data={"password": "typed-secret-2", "heartbeat": "-5"})
    body = bad.get_data(as_text=True)
    assert bad.status_code == 422 and "typed-secret-2" not in body
    guard = admin_client.post("/settings/messaging/rabbitmq", headers=HX,
                              data={"pending": _token(body), "heartbeat": "30"})
    assert guard.status_code == 409 and "typed-secret-2" not in guard.get_data(as_text=True)
    anyway = admin_client.post("/settings/messaging/rabbitmq", headers=HX, data={
        "pending": _token(guard.get_data(as_text=True)), "heartbeat": "30", "save_anyway": "1"})
    assert anyway.status_code == 200
    assert _password(app) == "typed-secret-2"


def test_a_held_secret_is_nobody_elses(enabled_rabbitmq: Flask, admin_client) -> None:
    app = enabled_rabbitmq
    before = _password(app)
    body = admin_client.post("/settings/messaging/rabbitmq", headers=HX,
                             data={"password": "typed-secret-3"}).get_data(as_text=True)
    token = _token(body)
    add_user(app, "other", "admin", ADMIN_PASSWORD + "x")
    other = login(app.test_client(), "other", ADMIN_PASSWORD + "x")
    other.post("/settings/messaging/rabbitmq", headers=HX, data={"pending": token, "save_anyway": "1"})
    assert _password(app) == before
    admin_client.post("/settings/messaging/mqtt", headers=HX, data={"pending": token})
    with app.app_context():
        assert service.effective("mqtt", reveal=True).fields["password"].value in (None, "")
    for bogus in ("x" * 43, "not a token", "a" * 5000):
        assert admin_client.post("/settings/messaging/rabbitmq", headers=HX, data={
            "pending": bogus, "save_anyway": "1"}).status_code == 200
    assert _password(app) == before
