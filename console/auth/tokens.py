"""API tokens: create (shown once), list, revoke. A `service` token is bound to one service name and
reads only that service's configuration."""
from __future__ import annotations

import re
from typing import Any

from .. import audit as audit_log
from ..crypto import new_token, token_digest
from ..extensions import db
from ..models import TOKEN_ROLES, ApiToken

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,79}$")
SERVICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:/-]{0,119}$")


class TokenError(ValueError):
    """Invalid token input; `errors` maps field names to messages."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def validate(name: Any, role: Any, service: Any) -> tuple[str, str, str | None]:
    """Clean (name, role, service) or TokenError with every problem by field."""
    errors: dict[str, str] = {}
    clean_name = name.strip() if isinstance(name, str) else ""
    if not NAME.match(clean_name):
        errors["name"] = ("Give the token a name of 1–80 letters, digits or . _ : @ - "
                          "(starting with a letter or digit).")
    elif find(clean_name) is not None:
        errors["name"] = f"A token named {clean_name} exists already."
    if role not in TOKEN_ROLES:
        errors["role"] = f"Choose a role: {', '.join(TOKEN_ROLES)}."
    clean_service = service.strip() if isinstance(service, str) and service.strip() else None
    if role == "service":
        if clean_service is None or not SERVICE.match(clean_service):
            errors["service"] = ("A service token needs the name of the service it is for "
                                 "(1–120 letters, digits, spaces or . _ : / -).")
    elif clean_service is not None:
        errors["service"] = "Only a token with the role service is bound to a service."
    if errors:
        raise TokenError(errors)
    return clean_name, role, clean_service


def create(name: Any, role: Any, service: Any = None, *, actor: str | None = None,
           origin: str = "console", provider: str | None = None) -> tuple[ApiToken, str]:
    """Create a token; (row, the token itself — shown once, only its digest is stored). `provider`:
    how the creator signed in (local, ldap, oidc, token, cli), audited with the creation."""
    try:
        clean_name, clean_role, clean_service = validate(name, role, service)
    except TokenError as exc:
        audit_log.record_rejection("create_token", actor=actor, origin=origin, protocol=None,
                                    errors=exc.errors)
        raise
    token = new_token()
    row = ApiToken(name=clean_name, role=clean_role, service=clean_service,
                   digest=token_digest(token), prefix=token[:10], created_by=actor)
    db.session.add(row)
    bound = f" for service {clean_service}" if clean_service else ""
    through = f" (created by {actor or 'unknown'}, signed in through {provider})" if provider else ""
    audit_log.audit("create_token", "applied", actor=actor, origin=origin,
                     summary=f"Created {clean_role} token {clean_name}{bound}{through}",
                     extra=[{"provider": provider}] if provider else None)
    db.session.commit()
    return row, token


def find(name: str) -> ApiToken | None:
    return db.session.execute(db.select(ApiToken).where(ApiToken.name == name)).scalar_one_or_none()


def all_tokens() -> list[ApiToken]:
    return list(db.session.execute(db.select(ApiToken).order_by(ApiToken.name)).scalars())


def revoke(name: str, *, actor: str | None = None, origin: str = "console") -> bool:
    """Delete a token; False when there is none of that name."""
    row = find(name)
    if row is None:
        return False
    db.session.delete(row)
    audit_log.audit("revoke_token", "applied", actor=actor, origin=origin,
                     summary=f"Revoked {row.role} token {row.name}")
    db.session.commit()
    return True


def document(row: ApiToken) -> dict[str, Any]:
    """Public description of a token (never the token)."""
    return {"name": row.name, "role": row.role, "service": row.service, "prefix": row.prefix,
            "created_at": row.created_at.isoformat(timespec="seconds") if row.created_at else None,
            "created_by": row.created_by,
            "last_used_at": row.last_used_at.isoformat(timespec="seconds")
            if row.last_used_at else None}
