"""Security headers on every response (every route of the URL map, errors and redirects included),
no-store on everything but static files, and templates that the Content-Security-Policy allows: no
inline script, style or event handler anywhere."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask

from console.headers import CONTENT_SECURITY_POLICY
from tests.conftest import ADMIN_PASSWORD, add_user, login, make_token

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = {"protocol": "kafka", "slot": "tls_ca", "run_id": "1", "version_id": "1", "name": "edge"}


def _assert_secure(response, where: str) -> None:
    h = response.headers
    csp = h.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp, where
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe" not in csp, where
    assert h.get("X-Content-Type-Options") == "nosniff", where
    assert h.get("X-Frame-Options") == "DENY", where
    assert h.get("Referrer-Policy") == "same-origin", where


def _get_urls(app: Flask) -> list[str]:
    urls = []
    for rule in app.url_map.iter_rules():
        if "GET" in rule.methods and rule.endpoint != "static":
            urls.append(re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", lambda m: SAMPLE.get(m.group(1), "x"),
                               rule.rule))
    return urls


def test_every_get_route_has_the_headers_and_no_store(app: Flask) -> None:
    add_user(app, "admin", "admin", ADMIN_PASSWORD)
    page = login(app.test_client(), "admin", ADMIN_PASSWORD)
    api = app.test_client()
    api.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {make_token(app, 'h', 'admin')}"
    anonymous = app.test_client()
    urls = _get_urls(app)
    assert len(urls) > 20
    for url in urls:
        for client in (page, api, anonymous):
            response = client.get(url)
            _assert_secure(response, url)
            assert response.headers.get("Cache-Control") == "no-store", (url, response.status_code)


def test_errors_redirects_and_writes_have_the_headers(app: Flask, admin_client) -> None:
    for response in (admin_client.get("/no-such-page"), admin_client.get("/api/v1/nothing"),
                     app.test_client().get("/settings/messaging"),
                     admin_client.post("/api/v1/brokers/kafka/diagnose?timeout=x"),
                     admin_client.patch("/api/v1/brokers/kafka", json=[1]),
                     app.test_client().post("/login", data={"username": "a", "password": "b"})):
        _assert_secure(response, response.request.path)
        assert response.headers["Cache-Control"] == "no-store"


def test_static_files_are_cacheable_but_protected(client) -> None:
    response = client.get("/static/console.css")
    assert response.status_code == 200
    _assert_secure(response, "static")
    assert response.headers.get("Cache-Control") != "no-store"


def test_policy_allows_only_own_files() -> None:
    sources = re.findall(r"(\S+-src) ([^;]+)", CONTENT_SECURITY_POLICY)
    for _, values in sources:
        assert set(values.split()) <= {"'self'", "'none'"}


TEMPLATES = sorted((ROOT / "templates").rglob("*.html"))


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: str(p.relative_to(ROOT / "templates")))
def test_templates_have_no_inline_script_style_or_handler(template: Path) -> None:
    text = template.read_text()
    for tag in re.findall(r"<script\b[^>]*>", text):
        assert "src=" in tag, (template, tag)
    assert all(not body.strip() for body in re.findall(r"<script\b[^>]*>(.*?)</script>", text, re.S))
    assert "<style" not in text and not re.search(r"\sstyle=", text), template
    assert not re.search(r"\son[a-z]+\s*=", text), template
    assert not re.search(r"\shx-on", text) and "javascript:" not in text, template
    for _ref in re.findall(r"(?:src|href)=\"(https?:)?//", text):
        pytest.fail(f"{template} loads from another site")


def test_htmx_does_not_inject_inline_styles(client) -> None:
    html = client.get("/login").get_data(as_text=True)
    config = re.search(r'<meta name="htmx-config" content=\'([^\']+)\'', html).group(1)
    assert '"includeIndicatorStyles": false' in config
    css = (ROOT / "static" / "console.css").read_text()
    assert ".htmx-indicator" in css and ".htmx-request .htmx-indicator" in css
