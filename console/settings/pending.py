"""Secrets typed into a form that was not saved yet — the save guard's failed connection test, a
confirmation step, a field error elsewhere — held encrypted on the server for the user who typed
them, so that "Save anyway" or "Confirm and save" saves them without the form ever showing them back.
The form carries only a random id (its digest is the key); a held value expires after HOLD_FOR."""
from __future__ import annotations

import datetime as dt
import json
import re
import secrets

from flask_login import current_user

from ..crypto import decrypt, encrypt, token_digest
from ..extensions import db
from ..models import PendingSecrets, utcnow

HOLD_FOR = dt.timedelta(minutes=30)
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")


def hold(scope: str, values: dict[str, str], replaces: str = "") -> str:
    """Hold `values` (field → secret) for this user and `scope`; the id for the form."""
    now = utcnow()
    db.session.execute(db.delete(PendingSecrets).where(PendingSecrets.expires_at < now))
    if replaces and _TOKEN.fullmatch(replaces):
        db.session.execute(db.delete(PendingSecrets).where(
            PendingSecrets.digest == token_digest(replaces)))
    token = secrets.token_urlsafe(32)
    db.session.add(PendingSecrets(digest=token_digest(token), user_id=current_user.id, scope=scope,
                                  values=encrypt(json.dumps(values)), expires_at=now + HOLD_FOR))
    db.session.commit()
    return token


def held(scope: str, token: str) -> dict[str, str]:
    """What this user holds under `token` for `scope` ({} when unknown, expired or another's)."""
    if not token or not _TOKEN.fullmatch(token):
        return {}
    row = db.session.get(PendingSecrets, token_digest(token))
    if row is None or row.user_id != current_user.id or row.scope != scope or row.expires_at < utcnow():
        return {}
    values = json.loads(decrypt(row.values))
    return {str(k): str(v) for k, v in values.items()} if isinstance(values, dict) else {}


def drop(token: str) -> None:
    """Forget what is held under `token` (after the save that used it)."""
    if token and _TOKEN.fullmatch(token):
        db.session.execute(db.delete(PendingSecrets).where(
            PendingSecrets.digest == token_digest(token)))
        db.session.commit()
