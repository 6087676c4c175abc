"""Pulsar tokens through the token front over pulsar-lite (scripts/tokenfront.py; the `token_front`
fixture): a token the front signed logs in (check up, diagnosis ok); a refused one — wrong signature,
expired, without `sub`, not a JWT, or none at all — is named `auth_failed` at the diagnosis's auth step,
although the Pulsar C++ client itself only reports a timeout for it (issue 18 item 13). Settings go
through the console's own settings service."""
from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from flask import Flask

from console import checks
from console.diagnostics.engine import diagnose
from console.settings import service

TIMEOUT = 3.0


@pytest.fixture
def ctx(app: Flask):
    with app.app_context():
        yield app


def saved(front: dict, token: str) -> Any:
    outcome = service.apply_changes("pulsar", {"enabled": True, "url": front["url"], "token": token}, "test")
    assert outcome.ok, outcome
    return service.effective("pulsar", reveal=True)


def test_a_signed_token_logs_in_through_the_front(ctx, token_front: dict) -> None:
    settings = saved(token_front, token_front["token"])
    result = checks.check_settings(settings, TIMEOUT)
    assert result.up, result.as_dict()
    with checks.broker_config(settings) as config:
        d = diagnose(config, TIMEOUT)
    assert d.ok, (d.cause, [(s.name, s.status, s.detail) for s in d.steps])
    assert "CONNECT with token authentication accepted" in d.step("auth").detail


REFUSED = {
    "wrong_signature": lambda front: jwt.encode({"sub": "console-test"}, "not-" + front["secret"], algorithm="HS256"),
    "expired": lambda front: jwt.encode({"sub": "console-test", "exp": int(time.time()) - 60}, front["secret"],
                                        algorithm="HS256"),
    "no_subject": lambda front: jwt.encode({"exp": int(time.time()) + 600}, front["secret"], algorithm="HS256"),
    "garbage": lambda front: "not-a-jwt",
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_a_refused_token_is_named_by_the_diagnosis(ctx, token_front: dict, name: str) -> None:
    settings = saved(token_front, REFUSED[name](token_front))
    with checks.broker_config(settings) as config:
        started = time.monotonic()
        d = diagnose(config, TIMEOUT)
        elapsed = time.monotonic() - started
    steps = [(s.name, s.status, s.detail) for s in d.steps]
    assert d.cause == "auth_failed" and d.step("auth").status == "failed", steps
    assert "AuthenticationError" in d.step("auth").detail and "Failed to authenticate" in d.step("auth").detail
    assert "token" in d.fix, d.fix
    assert elapsed <= TIMEOUT * 1.1
    result = checks.check_settings(settings, TIMEOUT)
    assert (result.status, result.cause) == ("down", "auth_failed"), result.as_dict()


def test_no_token_is_refused_too(ctx, token_front: dict) -> None:
    outcome = service.apply_changes("pulsar", {"enabled": True, "url": token_front["url"]}, "test")
    assert outcome.ok, outcome
    settings = service.effective("pulsar", reveal=True)
    with checks.broker_config(settings) as config:
        d = diagnose(config, TIMEOUT)
    assert d.cause == "auth_failed", [(s.name, s.status, s.detail) for s in d.steps]
    assert checks.check_settings(settings, TIMEOUT).cause == "auth_failed"
