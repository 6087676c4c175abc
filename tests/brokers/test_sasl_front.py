"""Kafka SASL logins through the SASL front over Tansu (scripts/saslfront.py; the `sasl_front` fixture):
the console's SASL PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 settings log in (check up, diagnosis ok with the
login named at its auth step), and a wrong password or an unknown user fails as `auth_failed` in both,
naming the mechanism (issue 18 item 13). Settings go through the console's own settings service, so the
security protocol is the one the console derives from them."""
from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from console import checks
from console.diagnostics.engine import diagnose
from console.settings import service

MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
TIMEOUT = 5.0


@pytest.fixture
def ctx(app: Flask):
    with app.app_context():
        yield app


def saved(front: dict, mechanism: str, **login: Any) -> Any:
    """The console's effective Kafka settings after saving the front as bootstrap server with `mechanism`."""
    values = {"enabled": True, "bootstrap_servers": f"{front['host']}:{front['port']}", "sasl_mechanism": mechanism,
              "username": front["username"], "password": front["password"], **login}
    outcome = service.apply_changes("kafka", values, "test")
    assert outcome.ok, outcome
    return service.effective("kafka", reveal=True)


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_sasl_login_through_the_front(ctx, sasl_front: dict, mechanism: str) -> None:
    settings = saved(sasl_front, mechanism)
    result = checks.check_settings(settings, TIMEOUT)
    assert result.up, result.as_dict()
    assert result.identity["cluster_id"] == "tansu_cluster"
    with checks.broker_config(settings) as config:
        assert config.options["security_protocol"] == "SASL_PLAINTEXT"
        d = diagnose(config, TIMEOUT)
    assert d.ok, (d.cause, d.summary, [(s.name, s.status, s.detail) for s in d.steps])
    assert f"SASL {mechanism} login of alice accepted" in d.step("auth").detail


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("login", [{"password": "wrong-password"}, {"username": "mallory"}],
                         ids=["wrong_password", "unknown_user"])
def test_refused_sasl_login_through_the_front(ctx, sasl_front: dict, mechanism: str, login: dict) -> None:
    settings = saved(sasl_front, mechanism, **login)
    result = checks.check_settings(settings, TIMEOUT)
    assert (result.status, result.cause) == ("down", "auth_failed"), result.as_dict()
    with checks.broker_config(settings) as config:
        d = diagnose(config, TIMEOUT)
    steps = [(s.name, s.status, s.detail) for s in d.steps]
    assert d.cause == "auth_failed" and d.step("auth").status == "failed", steps
    assert mechanism in d.summary + d.fix, (d.summary, d.fix)
    user = login.get("username", "alice")
    assert user in d.summary + d.fix, (d.summary, d.fix)
