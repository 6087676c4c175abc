"""API: API tokens — list, create (the token shown once) and revoke."""
from __future__ import annotations

from typing import Any

from flask import jsonify, request

from ..auth import actor, actor_provider
from ..auth import tokens as api_tokens
from . import _error, bp


def _token_body() -> dict[str, Any] | None:
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else None


@bp.get("/tokens")
def list_tokens():
    return jsonify(tokens=[api_tokens.document(t) for t in api_tokens.all_tokens()])


@bp.post("/tokens")
def create_token():
    body = _token_body()
    if body is None:
        return _error(400, "bad_request", 'Send {"name": …, "role": "admin|viewer|service", '
                                          '"service": …}.')
    try:
        row, token = api_tokens.create(body.get("name"), body.get("role"), body.get("service"),
                                       actor=actor(), origin="api", provider=actor_provider())
    except api_tokens.TokenError as exc:
        return _error(422, "invalid", "The token was not created.", errors=exc.errors)
    return jsonify({**api_tokens.document(row), "token": token}), 201


@bp.delete("/tokens/<name>")
def revoke_token(name: str):
    if not api_tokens.revoke(name, actor=actor(), origin="api"):
        return _error(404, "not_found", f"No token named {name!r}.")
    return jsonify(revoked=name)
