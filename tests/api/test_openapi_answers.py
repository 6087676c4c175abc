"""Every answer the API gives is documented: each route of the URL map is called the ways that give
its standard answers (no token, a viewer's token, unknown names and ids in every path variable,
input refused at the boundary, a body of the wrong shape) and each status it answers must be in
the OpenAPI responses of that operation — for a protocol's own paths (/brokers/kafka, …), in each
of them (issue 18 item 11: PATCH /brokers/<protocol> answered an undocumented 404)."""
from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient

from console.api.openapi import openapi_document
from console.brokers import PROTOCOLS
from tests.conftest import make_token

UNKNOWN = {"protocol": "jms", "slot": "nosuch", "name": "nosuch", "service": "nosuch",
           "token_name": "nosuch"}
KNOWN = {"protocol": "kafka", "slot": "tls_ca", "name": "edge", "service": "edge"}


def _operations(rule: str, method: str) -> list[tuple[str, dict]]:
    """The spec's operation(s) of a Flask rule: its templated path, or every protocol's own."""
    paths = openapi_document()["paths"]
    path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule[len("/api/v1"):])
    found = [(path, paths[path][method])] if method in paths.get(path, {}) else [
        (p, paths[p][method]) for p in (path.replace("{protocol}", x) for x in PROTOCOLS)
        if method in paths.get(p, {})]
    assert found, (rule, method)
    return found


def _fill(rule: str, values: dict[str, str], number: str) -> str:
    def one(match: re.Match) -> str:
        converter, name = match.group(1) or "", match.group(2)
        return number if converter == "int" else values.get(name, values.get("name", "x"))
    return re.sub(r"<(?:(\w+):)?(\w+)>", one, rule)


def _api_rules(app: Flask) -> list[tuple[str, str]]:
    return sorted((rule.rule, method) for rule in app.url_map.iter_rules()
                  if rule.rule.startswith("/api/v1/") and rule.endpoint != "api.openapi"
                  for method in rule.methods - {"HEAD", "OPTIONS"})


def test_every_answer_of_every_route_is_documented(app: Flask, client: FlaskClient,
                                                   admin_token: str) -> None:
    viewer = make_token(app, "doc-viewer", "viewer")
    undocumented = []
    probes = 0
    for rule, method in _api_rules(app):
        operations = _operations(rule, method.lower())
        calls = [
            ({}, _fill(rule, KNOWN, "1"), None),                               # no token
            ({"Authorization": f"Bearer {viewer}"}, _fill(rule, KNOWN, "1"), {}),
            ({"Authorization": f"Bearer {admin_token}"}, _fill(rule, UNKNOWN, "999999"), {}),
            ({"Authorization": f"Bearer {admin_token}"}, _fill(rule, KNOWN, "1") + "?q=%00", {}),
            ({"Authorization": f"Bearer {admin_token}"}, _fill(rule, KNOWN, "1"), []),
            ({"Authorization": f"Bearer {admin_token}"}, _fill(rule, KNOWN, "999999"),
             {"confirm": "maybe"}),
        ]
        for headers, url, body in calls:
            kwargs = {} if body is None or method == "GET" else {"json": body}
            response = client.open(url, method=method, headers=headers, **kwargs)
            probes += 1
            status = str(response.status_code)
            for path, op in operations:
                if status not in op["responses"]:
                    undocumented.append((method, path, url, status))
    assert probes > 150
    assert not undocumented, "\n".join(map(str, undocumented))


def test_a_protocols_own_paths_document_the_404_of_an_unknown_protocol(client: FlaskClient,
                                                                        admin_token: str) -> None:
    answer = client.patch("/api/v1/brokers/jms", headers={"Authorization": f"Bearer {admin_token}"},
                          json={"host": "x"})
    assert answer.status_code == 404 and answer.get_json()["error"] == "not_found"
    paths = openapi_document()["paths"]
    for protocol in PROTOCOLS:
        for method in ("get", "patch"):
            assert "404" in paths[f"/brokers/{protocol}"][method]["responses"], (protocol, method)
