"""Input at every boundary never gives a 5xx: every route of the console (found in the URL map, so a new
route is covered without a new test) gets huge integers, NUL bytes, invalid UTF-8 and lone surrogates in
its path, query, form, JSON and upload file names, and JSON of the wrong shape — on SQLite and
PostgreSQL."""
from __future__ import annotations

import io
import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from console.inputs import MAX_INT, BadInput, bounded_int, query_int
from tests.conftest import ADMIN_PASSWORD, add_user, login, make_token
from tests.db_fixtures import db_app  # noqa: F401 - fixture

HUGE = ("99999999999999999999", "3000000000", str(MAX_INT + 1), "9" * 5000)
BAD_TEXT = {"nul": "%00", "invalid_utf8": "%FF%FE", "overlong": "%C0%AF", "surrogate_utf8": "%ED%A0%80"}
WRITE = ("POST", "PUT", "PATCH", "DELETE")
# the value each path variable gets, when it is not the one under test
SAMPLE = {"protocol": "kafka", "slot": "tls_ca", "name": "edge"}


def _routes(app: Flask) -> list[tuple[str, str, dict[str, str]]]:
    """(rule, method, converters) of every route but static files."""
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        converters = {name: type(conv).__name__ for name, conv in rule._converters.items()}
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((rule.rule, method, converters))
    return out


def _url(rule: str, converters: dict[str, str], int_value: str = "1") -> str:
    def fill(match: re.Match) -> str:
        name = match.group(2)
        if "Int" in converters.get(name, ""):
            return int_value
        return SAMPLE.get(name, "x")
    return re.sub(r"<(?:([a-z_]+):)?([a-z_]+)>", fill, rule)


@pytest.fixture
def clients(db_app: Flask) -> dict[str, FlaskClient]:  # noqa: F811
    add_user(db_app, "admin", "admin", ADMIN_PASSWORD)
    token = make_token(db_app, "fuzz", "admin")
    api = db_app.test_client()
    api.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return {"page": login(db_app.test_client(), "admin", ADMIN_PASSWORD), "api": api}


def _client(clients: dict[str, FlaskClient], rule: str) -> FlaskClient:
    return clients["api"] if rule.startswith("/api/") else clients["page"]


def test_every_route_is_reached(db_app: Flask) -> None:  # noqa: F811
    routes = _routes(db_app)
    assert len(routes) > 40
    assert any("Int" in c for _, _, conv in routes for c in conv.values())


def test_huge_integers_in_paths_are_404(db_app: Flask, clients) -> None:  # noqa: F811
    tried = 0
    for rule, method, converters in _routes(db_app):
        if not any("Int" in c for c in converters.values()):
            continue
        for value in HUGE:
            response = _client(clients, rule).open(_url(rule, converters, value), method=method)
            assert response.status_code == 404, (method, rule, value, response.status_code)
            tried += 1
    assert tried >= 20


@pytest.mark.parametrize("param", ["page", "per_page", "a", "against", "timeout"])
def test_huge_integers_in_queries_are_never_5xx(db_app: Flask, clients, param: str) -> None:  # noqa: F811
    for rule, method, converters in _routes(db_app):
        if method != "GET":
            continue
        for value in HUGE[:3] + ("-1", "0", ""):
            url = _url(rule, converters) + f"?{param}={value}"
            response = _client(clients, rule).get(url)
            assert response.status_code < 500, (rule, param, value, response.data[:300])


def test_audit_and_adapter_pages_bound_their_page_numbers(clients) -> None:
    for url in ("/api/v1/audit?page=3000000000", "/api/v1/audit?per_page=99999999999999999999",
                "/api/v1/adapters?page=99999999999999999999", "/api/v1/adapters?page=0"):
        response = clients["api"].get(url)
        assert response.status_code == 400 and "whole number from" in response.json["message"]
    page = clients["page"].get("/audit?page=3000000000")
    assert page.status_code == 200 and "whole number from 1 to" in page.get_data(as_text=True)
    history = clients["page"].get("/settings/messaging/history?a=3000000000&b=99999999999999999999")
    assert history.status_code == 200


@pytest.mark.parametrize("kind", list(BAD_TEXT))
def test_bad_text_in_any_query_is_400(db_app: Flask, clients, kind: str) -> None:  # noqa: F811
    for rule, method, converters in _routes(db_app):
        url = _url(rule, converters) + f"?q=a{BAD_TEXT[kind]}b&actor=x"
        response = _client(clients, rule).open(url, method=method)
        assert response.status_code == 400, (method, rule, response.status_code, response.data[:200])
        body = response.get_data(as_text=True)
        assert "NUL byte" in body or "not valid UTF-8" in body


@pytest.mark.parametrize("kind", list(BAD_TEXT))
def test_bad_text_in_any_path_is_4xx(db_app: Flask, clients, kind: str) -> None:  # noqa: F811
    for rule, method, converters in _routes(db_app):
        if not converters or all("Int" in c for c in converters.values()):
            continue
        url = re.sub(r"<(?:(?:string|protocol):)?([a-z_]+)>", f"k{BAD_TEXT[kind]}", rule)
        url = _url(url, converters)
        response = _client(clients, rule).open(url, method=method)
        assert 400 <= response.status_code < 500, (method, rule, response.status_code)


@pytest.mark.parametrize("value", ["a\x00b", "\ud800", "x\udfffy"])
def test_bad_text_in_any_json_value_or_key_is_400(db_app: Flask, clients, value: str) -> None:  # noqa: F811
    tried = 0
    for rule, method, converters in _routes(db_app):
        if method not in WRITE:
            continue
        for body in ({"name": value, "protocols": ["mqtt"]}, {"host": value}, {value: 1},
                     {"priorities": ["kafka", value]}, {"services": [value, "b"]}):
            raw = __import__("json").dumps(body)
            response = _client(clients, rule).open(_url(rule, converters), method=method, data=raw,
                                                   content_type="application/json")
            assert response.status_code == 400, (method, rule, body, response.data[:200])
            tried += 1
    assert tried > 50


def test_invalid_utf8_json_and_broken_json_are_400(db_app: Flask, clients) -> None:  # noqa: F811
    for rule, method, converters in _routes(db_app):
        if method not in WRITE or not rule.startswith("/api/"):
            continue
        for raw in (b'{"host": "\xff"}', b'{"host": ', b"\x00"):
            response = clients["api"].open(_url(rule, converters), method=method, data=raw,
                                           content_type="application/json")
            assert response.status_code == 400, (method, rule, raw, response.data[:200])


@pytest.mark.parametrize("body", [[1], [], "text", 3, None, True])
def test_json_of_the_wrong_shape_is_400_on_every_api_write(db_app: Flask, clients, body) -> None:  # noqa: F811
    import json

    tried = 0
    for rule, method, converters in _routes(db_app):
        if method not in WRITE or not rule.startswith("/api/"):
            continue
        response = clients["api"].open(_url(rule, converters), method=method, data=json.dumps(body),
                                       content_type="application/json")
        assert response.status_code == 400, (method, rule, response.status_code, response.data[:200])
        assert "JSON object" in response.json["message"]
        tried += 1
    assert tried >= 10


def test_rollback_with_a_list_body_is_400(clients) -> None:
    response = clients["api"].post("/api/v1/versions/1/rollback", json=[1])
    assert response.status_code == 400 and response.json["error"] == "bad_request"


@pytest.mark.parametrize("value", ["a\x00b", b"\xff\xfe".decode("latin-1")])
def test_bad_text_in_any_form_field_is_400(db_app: Flask, clients, value: str) -> None:  # noqa: F811
    for rule, method, converters in _routes(db_app):
        if method not in WRITE:
            continue
        raw = "username=" + ("%00" if "\x00" in value else "%FF%FE") + "&password=x&host=h"
        response = _client(clients, rule).open(_url(rule, converters), method=method, data=raw,
                                               content_type="application/x-www-form-urlencoded")
        assert response.status_code == 400, (method, rule, response.status_code)
        multipart = _client(clients, rule).open(
            _url(rule, converters), method=method,
            data={"host": "ok", "name": "a\x00b", "file": (io.BytesIO(b"x"), "ca.pem")})
        assert multipart.status_code == 400, (method, rule, multipart.status_code)


def test_login_form_with_a_nul_is_400_not_500(db_app: Flask) -> None:  # noqa: F811
    client = db_app.test_client()
    response = client.post("/login", data={"username": "adm\x00in", "password": "x"})
    assert response.status_code == 400 and b"NUL byte" in response.data


def _multipart(filename: bytes) -> tuple[bytes, str]:
    body = (b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + filename +
            b"\"\r\nContent-Type: application/octet-stream\r\n\r\n-----BEGIN\r\n--B--\r\n")
    return body, "multipart/form-data; boundary=B"


@pytest.mark.parametrize("name", [b"ca\x00.pem", b"ca\xff.pem", b"ca\xed\xa0\x80.pem"])
def test_bad_upload_file_names_are_400(clients, name: bytes) -> None:
    for client, url in ((clients["api"], "/api/v1/brokers/kafka/files/tls_ca"),
                        (clients["page"], "/settings/messaging/kafka/files/tls_ca")):
        body, content_type = _multipart(name)
        response = client.post(url, data=body, content_type=content_type)
        assert response.status_code == 400, (url, response.status_code, response.data[:300])


def test_yaml_import_body_with_nul_or_invalid_utf8_is_400(clients) -> None:
    for raw in (b"kafka:\n  host: a\x00b\n", b"kafka:\n  host: \xff\n"):
        response = clients["api"].post("/api/v1/config/import", data=raw,
                                       content_type="application/yaml")
        assert response.status_code == 400, response.data


def test_nothing_was_saved_by_refused_input(db_app: Flask, clients) -> None:  # noqa: F811
    clients["api"].patch("/api/v1/brokers/kafka", json={"host": "a\x00b"})
    clients["api"].post("/api/v1/services", json={"name": "x\x00", "protocols": ["mqtt"]})
    assert clients["api"].get("/api/v1/brokers/kafka").json["settings"]["host"]["value"] == "localhost"
    assert clients["api"].get("/api/v1/services").json["services"] == []


def test_good_input_still_passes(clients) -> None:
    response = clients["api"].patch("/api/v1/brokers/kafka", json={"host": "kafka-ü.example"})
    assert response.status_code in (200, 422)
    assert clients["api"].get("/api/v1/audit?actor=admin&q=%C3%BC&page=2").status_code == 200
    assert clients["api"].post("/api/v1/services",
                               json={"name": "edge", "protocols": ["mqtt"]}).status_code == 201


def test_helpers() -> None:
    assert bounded_int(" 42 ") == 42 and bounded_int("-5") == -5
    for bad in ("99999999999999999999", "1e3", "", "0x1", "1.0", str(MAX_INT + 1)):
        with pytest.raises(ValueError):
            bounded_int(bad)
    assert query_int({}, "page", 7) == 7 and query_int({"page": ""}, "page", 7) == 7
    with pytest.raises(BadInput, match="page must be a whole number from 1 to 9"):
        query_int({"page": "10"}, "page", 1, 1, 9)


@pytest.mark.parametrize("raw", ["[" * 100000 + "]" * 100000, '{"a":' * 40 + "1" + "}" * 40,
                                 '{"connect_timeout": NaN}', '{"port": Infinity}',
                                 '{"port": 1' + "0" * 4400 + "}"])
def test_deep_or_non_finite_json_is_400(clients, raw: str) -> None:
    response = clients["api"].patch("/api/v1/brokers/kafka", data=raw, content_type="application/json")
    assert response.status_code == 400 and response.json["error"] == "bad_request"


def test_deeply_nested_yaml_is_refused_not_500(clients) -> None:
    response = clients["api"].post("/api/v1/config/import", data="[" * 5000,
                                   content_type="application/yaml")
    assert response.status_code == 422 and "nested far too deeply" in response.json["errors"]["file"]


FORM_TEXT = st.one_of(st.text(max_size=40), st.sampled_from(
    ["", "0", "-1", "65536", "99999999999999999999", "1e400", "nan", "true", "x" * 5000, "ü.example",
     "pulsar://", "a:b:c", ",,,", "localhost:99999"]))


@pytest.mark.parametrize("protocol", ["kafka", "pulsar", "mqtt", "nats", "rabbitmq"])
def test_page_form_values_never_give_a_5xx(db_app: Flask, clients, protocol: str) -> None:  # noqa: F811
    """The Save form of each protocol with arbitrary text in every field (the protocol stays
    disabled, so no save runs a connection test)."""
    from console.messaging.schema import SCHEMA

    names = [f.name for f in SCHEMA[protocol] if not f.is_file and f.name != "enabled"]

    @settings(max_examples=25, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.dictionaries(st.sampled_from(names), FORM_TEXT, min_size=1, max_size=6))
    def post(form: dict[str, str]) -> None:
        response = clients["page"].post(f"/settings/messaging/{protocol}", data=form,
                                        headers={"HX-Request": "true"})
        assert response.status_code < 500, (form, response.data[:300])

    post()
