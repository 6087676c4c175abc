"""schemathesis against /api/v1/openapi.json: every documented operation, a fixed seed and a bounded
number of examples, on SQLite and PostgreSQL — no answer is a 5xx, and every status is documented.
The diagnose operation is left out: it opens connections to whatever host the generated settings
name, and this test never sends traffic off the machine."""
from __future__ import annotations

import os

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate

from console.api.openapi import openapi_document
from tests.conftest import make_token
from tests.db_fixtures import db_app  # noqa: F401 - fixture

# examples per operation: ~130 reads, ~425 writes per database; FUZZ_SCALE=10 for a deeper run by hand
SCALE = float(os.environ.get("FUZZ_SCALE", "1"))
READS, WRITES = int(10 * SCALE), int(25 * SCALE)
CHECKS = [schemathesis.checks.not_a_server_error, schemathesis.checks.status_code_conformance]


@pytest.fixture
def fuzz_token(db_app: Flask) -> str:  # noqa: F811
    return make_token(db_app, "fuzz", "admin")


# the document as the app serves it (it is built from the settings schema alone)
schema = schemathesis.openapi.from_dict(openapi_document()).exclude(path_regex=r"/diagnose$")
SETTINGS = {"derandomize": True, "database": None, "deadline": None,
            "suppress_health_check": list(HealthCheck)}


def _call(case, app: Flask, token: str) -> None:
    case.call_and_validate(app=app, headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)


@schema.include(method="GET").parametrize()
@settings(max_examples=READS, **SETTINGS)
def test_no_read_answers_5xx(case, db_app: Flask, fuzz_token: str) -> None:  # noqa: F811
    _call(case, db_app, fuzz_token)


@schema.exclude(method="GET").parametrize()
@settings(max_examples=WRITES, **SETTINGS)
def test_no_write_answers_5xx(case, db_app: Flask, fuzz_token: str) -> None:  # noqa: F811
    _call(case, db_app, fuzz_token)


def test_the_served_document_is_the_tested_one(client) -> None:
    assert client.get("/api/v1/openapi.json").get_json() == openapi_document()


def test_document_is_valid_openapi(client) -> None:
    document = client.get("/api/v1/openapi.json").get_json()
    validate(document)


def test_patch_bodies_are_tied_to_their_protocol(client) -> None:
    document = client.get("/api/v1/openapi.json").get_json()
    assert "/brokers/{protocol}" not in document["paths"]
    for protocol in ("kafka", "pulsar", "mqtt", "nats", "rabbitmq"):
        body = document["paths"][f"/brokers/{protocol}"]["patch"]["requestBody"]
        ref = body["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/{protocol.capitalize()}Patch"
        fields = document["components"]["schemas"][f"{protocol.capitalize()}Patch"]["properties"]
        assert "host" in fields and "confirm" in fields
    assert "bootstrap_servers" in document["components"]["schemas"]["KafkaPatch"]["properties"]
    assert "bootstrap_servers" not in document["components"]["schemas"]["MqttPatch"]["properties"]
    assert "oneOf" not in str(document["paths"])


def test_error_statuses_are_documented(client) -> None:
    document = client.get("/api/v1/openapi.json").get_json()
    found: set[str] = set()
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            codes = set(op["responses"])
            found |= codes
            assert {"400", "401"} <= codes, (path, method)
            if method != "get" and path != "/connections/check":
                assert "403" in codes, (path, method)
            if "{" in path:
                assert "404" in codes, (path, method)
    assert {"401", "403", "404", "409", "412", "413", "422"} <= found
    kafka = document["paths"]["/brokers/kafka"]["patch"]["responses"]
    assert {"409", "412", "413", "422"} <= set(kafka)
