"""A request whose session has ended (logged out in another tab, or the session ended on the server):
htmx requests (polls, saves, fragments) take the whole tab to the log-in page with `next` the page they
were made from, and swap nothing; other requests are redirected as before (issue 18 item 2)."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from flask import Flask

from tests.conftest import ADMIN_PASSWORD, add_user, login

HTMX = {"HX-Request": "true", "HX-Current-URL": "http://localhost/settings/messaging/mqtt?rollout=3"}


def _next_of(location: str) -> str:
    parts = urlsplit(location)
    assert parts.path == "/login", location
    return parse_qs(parts.query)["next"][0]


def _logged_out_elsewhere(app: Flask):
    """A client whose session was ended by logging out in another tab of the same browser."""
    add_user(app, "admin", "admin", ADMIN_PASSWORD)
    client = login(app.test_client(), "admin", ADMIN_PASSWORD)
    assert client.get("/settings/messaging/overview", headers=HTMX).status_code == 200
    assert client.post("/logout").status_code == 302
    return client


def test_an_htmx_poll_without_a_session_sends_the_tab_to_the_log_in_page(app: Flask) -> None:
    client = _logged_out_elsewhere(app)
    response = client.get("/settings/messaging/overview", headers=HTMX)
    assert response.status_code == 401
    assert _next_of(response.headers["HX-Redirect"]) == "/settings/messaging/mqtt?rollout=3"
    assert b"<nav" not in response.data and b"<form" not in response.data   # nothing to swap


def test_an_htmx_save_without_a_session_saves_nothing_and_comes_back_after_log_in(app: Flask) -> None:
    client = _logged_out_elsewhere(app)
    response = client.post("/settings/messaging/mqtt", data={"host": "other.example"}, headers=HTMX)
    assert response.status_code == 401
    target = _next_of(response.headers["HX-Redirect"])
    page = client.get(response.headers["HX-Redirect"])
    assert "Your session has ended" in page.get_data(as_text=True)
    back = client.post(response.headers["HX-Redirect"],
                       data={"username": "admin", "password": ADMIN_PASSWORD})
    assert back.status_code == 302 and back.headers["Location"] == target
    assert "other.example" not in client.get("/settings/messaging/mqtt").get_data(as_text=True)


def test_a_foreign_or_missing_current_url_falls_back_to_the_settings_page(app: Flask) -> None:
    client = _logged_out_elsewhere(app)
    for headers in ({"HX-Request": "true"},
                    {"HX-Request": "true", "HX-Current-URL": "https://evil.example/x"},
                    {"HX-Request": "true", "HX-Current-URL": "http://localhost//evil.example"}):
        response = client.get("/settings/messaging/overview", headers=headers)
        assert response.status_code == 401
        assert _next_of(response.headers["HX-Redirect"]) == "/settings/messaging"


def test_a_page_without_a_session_is_still_redirected(app: Flask) -> None:
    response = app.test_client().get("/settings/messaging/kafka?x=1")
    assert response.status_code == 302 and "HX-Redirect" not in response.headers
    assert _next_of(response.headers["Location"]) == "/settings/messaging/kafka?x=1"
