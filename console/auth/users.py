"""Console users: create, change role, set or generate a password, remove — for the users page and
the CLI. The last admin can be neither demoted nor removed; every change is audited."""
from __future__ import annotations

import re
import secrets
from typing import Any

from .. import audit as audit_log
from ..extensions import db
from ..models import ROLES, SOURCES, User

MIN_PASSWORD = 8
MAX_PASSWORD = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UserError(ValueError):
    """Invalid user input or a refused change; `errors` maps field names to messages."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def find(name: str) -> User | None:
    return db.session.execute(db.select(User).where(User.username == name)).scalar_one_or_none()


def get(user_id: int) -> User | None:
    return db.session.get(User, user_id)


def all_users() -> list[User]:
    return list(db.session.execute(db.select(User).order_by(User.username)).scalars())


def password_problem(password: Any) -> str | None:
    """Why `password` cannot be used, or None."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        return f"The password needs at least {MIN_PASSWORD} characters."
    if len(password) > MAX_PASSWORD:
        return f"The password may have at most {MAX_PASSWORD} characters."
    return None


def name_problem(name: str) -> str | None:
    """Why `name` (stripped) cannot be a new user's name, or None."""
    if not name or len(name) > 80 or _CONTROL.search(name):
        return "Give a user name of 1 to 80 characters."
    if find(name) is not None:
        return f"A user named {name} exists already."
    return None


def _refuse(action: str, errors: dict[str, str], actor: str | None, origin: str) -> UserError:
    audit_log.record_rejection(action, actor=actor, origin=origin, protocol=None, errors=errors)
    return UserError(errors)


def create(name: Any, role: Any, password: str | None = None, *, actor: str | None = None,
           origin: str = "console") -> tuple[User, str | None]:
    """Create a user; (user, the generated password when none was given — shown once)."""
    clean = name.strip() if isinstance(name, str) else ""
    errors: dict[str, str] = {}
    if problem := name_problem(clean):
        errors["username"] = problem
    if role not in ROLES:
        errors["role"] = f"Choose a role: {', '.join(ROLES)}."
    generated = None
    if password:
        if problem := password_problem(password):
            errors["password"] = problem
    else:
        password = generated = secrets.token_urlsafe(12)
    if errors:
        raise _refuse("create_user", errors, actor, origin)
    user = User(username=clean, role=role)
    user.set_password(password)
    db.session.add(user)
    audit_log.audit("create_user", "applied", actor=actor, origin=origin,
                     summary=f"Created {role} user {clean}")
    db.session.commit()
    return user, generated


def _admin_count() -> int:
    admins = db.session.execute(
        db.select(User.id).where(User.role == "admin").with_for_update()).scalars()
    return len(list(admins))


def set_role(user: User, role: Any, *, actor: str | None = None, origin: str = "console") -> bool:
    """Give `user` another role; False when it had that role already."""
    errors: dict[str, str] = {}
    if role not in ROLES:
        errors["role"] = f"Choose a role: {', '.join(ROLES)}."
    elif role == user.role:
        return False
    elif user.role == "admin" and _admin_count() <= 1:
        errors["role"] = f"{user.username} is the last admin: make another user admin first."
    if errors:
        db.session.rollback()
        raise _refuse("change_role", errors, actor, origin)
    old = user.role
    user.role = role
    user.end_sessions()
    audit_log.audit("change_role", "applied", actor=actor, origin=origin,
                     summary=f"Changed the role of {user.username} from {old} to {role}")
    db.session.commit()
    return True


def set_password(user: User, password: str | None = None, *, actor: str | None = None,
                 origin: str = "console") -> str | None:
    """Set `password` (or a generated one, returned — shown once); ends the user's sessions."""
    generated = None
    if user.source != "local":
        raise _refuse("reset_password", {"password": f"{user.username} signs in through "
                      f"{SOURCES.get(user.source, user.source)} and has no local password."},
                      actor, origin)
    if password:
        if problem := password_problem(password):
            raise _refuse("reset_password", {"password": problem}, actor, origin)
    else:
        password = generated = secrets.token_urlsafe(12)
    user.set_password(password)
    how = "a generated password" if generated else "a new password"
    audit_log.audit("reset_password", "applied", actor=actor, origin=origin,
                     summary=f"Set {how} for {user.username}")
    db.session.commit()
    return generated


def remove(user: User, *, actor: str | None = None, origin: str = "console") -> None:
    """Delete `user` (its sessions end with it); never the last admin."""
    errors: dict[str, str] = {}
    if user.role == "admin" and _admin_count() <= 1:
        errors["user"] = f"{user.username} is the last admin and cannot be removed."
    if errors:
        db.session.rollback()
        raise _refuse("remove_user", errors, actor, origin)
    db.session.delete(user)
    audit_log.audit("remove_user", "applied", actor=actor, origin=origin,
                     summary=f"Removed {user.role} user {user.username}")
    db.session.commit()
