"""Groups → roles for users of a provider (LDAP, OpenID Connect), taken afresh at every sign-in, and
the record of every sign-in (audited with the provider and the groups).

CONSOLE_ROLE_MAPPING is `admin=GROUP[,GROUP…];viewer=GROUP[,GROUP…]` (group names as the provider gives
them; admin wins over viewer); CONSOLE_ROLE_DEFAULT is `none` (a user in no mapped group is refused) or
`viewer`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .. import audit as audit_log
from ..extensions import db
from ..models import ROLES, SOURCES, User, utcnow


def parse_mapping(text: str | None) -> dict[str, list[str]]:
    """{role: [group, …]} of a CONSOLE_ROLE_MAPPING value (checked by the config: roles are admin or
    viewer)."""
    mapping: dict[str, list[str]] = {role: [] for role in ROLES}
    for part in (text or "").split(";"):
        role, _, groups = part.partition("=")
        role = role.strip()
        if role in mapping:
            mapping[role] += [g.strip() for g in groups.split(",") if g.strip()]
    return mapping


@dataclass
class Decision:
    """The role some groups give, and why (for the refusal page and Test sign-in)."""

    role: str | None
    groups: list[str]
    matched: dict[str, list[str]] = field(default_factory=dict)   # role → the groups that gave it
    mapping: dict[str, list[str]] = field(default_factory=dict)   # role → the groups that would
    explanation: list[str] = field(default_factory=list)

    @property
    def wanted(self) -> list[str]:
        """Every group name the mapping names (what to ask for)."""
        return [g for names in self.mapping.values() for g in names]


def decide(groups: Iterable[str], config: Mapping[str, Any]) -> Decision:
    """The role `groups` map to by CONSOLE_ROLE_MAPPING (admin wins), else CONSOLE_ROLE_DEFAULT."""
    received = sorted({str(g) for g in groups})
    mapping = parse_mapping(config.get("ROLE_MAPPING"))
    decision = Decision(None, received, mapping=mapping)
    lowered = {g.lower(): g for g in received}
    for role in ROLES:                                   # admin first: admin wins over viewer
        hits = [g for g in mapping[role] if g in received]
        decision.matched[role] = hits
        if hits and decision.role is None:
            decision.role = role
        for name in mapping[role]:
            if name in received:
                decision.explanation.append(f"{role}: the group “{name}” was received — it matches.")
            elif name.lower() in lowered:
                decision.explanation.append(
                    f"{role}: the mapping names “{name}”, the provider gave “{lowered[name.lower()]}” "
                    "— they differ in upper and lower case, and names must match exactly.")
            else:
                decision.explanation.append(f"{role}: the mapping names “{name}”, which is not among "
                                            "the groups received.")
        if not mapping[role]:
            decision.explanation.append(f"{role}: CONSOLE_ROLE_MAPPING names no group for {role}.")
    if decision.role is None and config.get("ROLE_DEFAULT") == "viewer":
        decision.role = "viewer"
        decision.explanation.append("No mapped group: CONSOLE_ROLE_DEFAULT=viewer gives viewer.")
    elif decision.role is None:
        decision.explanation.append("No mapped group and CONSOLE_ROLE_DEFAULT=none: the sign-in is "
                                    "refused.")
    if not received:
        decision.explanation.append("The provider gave no groups at all for this user.")
    return decision


class SignInRefused(Exception):
    """A provider's user who may not sign in (no role, or a local user of the same name)."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def record(outcome: str, *, username: str, provider: str, groups: Iterable[str] | None = None,
           role: str | None = None, reason: str = "") -> None:
    """Audit one sign-in, refused or not, with the provider and the groups (commits)."""
    group_list = sorted(set(groups or []))
    label = SOURCES.get(provider, provider)
    shown = ", ".join(group_list) if group_list else "none"
    if outcome == "applied":
        summary = f"Signed in through {label} as {role} (groups: {shown})"
    else:
        summary = f"Sign-in through {label} refused: {reason} (groups: {shown})"
    audit_log.audit("sign_in", outcome, actor=username[:80] or "anonymous", origin="page",
                    summary=summary,
                    extra=[{"provider": provider, "groups": group_list, "role": role}])
    db.session.commit()


def record_test(*, username: str, provider: str, groups: Iterable[str], role: str | None,
                tester: str) -> None:
    """Audit a Test sign-in (it signs no one in)."""
    group_list = sorted(set(groups))
    label = SOURCES.get(provider, provider)
    audit_log.audit("test_sign_in", "applied", actor=tester, origin="page",
                    summary=f"Test sign-in through {label} of {username}: role {role or 'none'} "
                            f"(groups: {', '.join(group_list) or 'none'})",
                    extra=[{"provider": provider, "groups": group_list, "role": role, "user": username}])
    db.session.commit()


def provider_user(username: str, provider: str, groups: list[str], role: str) -> User:
    """The console's user for someone the provider signed in: created on first sign-in, the role and
    groups of this sign-in stored; a changed role ends their other sessions. A local user of the same
    name is never taken over (SignInRefused)."""
    user = db.session.execute(db.select(User).where(User.username == username)).scalar_one_or_none()
    if user is None:
        user = User(username=username, role=role, source=provider, password_hash="")
        db.session.add(user)
    elif user.source != provider:
        where = "a local user" if user.source == "local" else f"a user of {SOURCES.get(user.source)}"
        raise SignInRefused(f"The console has {where} named {username}: an admin has to remove it "
                            f"before {username} can sign in through {SOURCES[provider]}.")
    elif user.role != role:
        user.role = role
        user.end_sessions()             # the role changed: every open session of theirs ends
    user.groups = groups
    user.last_sign_in_at = utcnow()
    return user
