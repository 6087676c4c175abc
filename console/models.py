"""Typed SQLAlchemy 2.0 models of the console's own data: users, API tokens, the stored messaging
settings (one record per protocol), uploaded TLS material and the protocol priority list."""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from flask_login import UserMixin
from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator
from werkzeug.security import check_password_hash, generate_password_hash

from .extensions import Base, db

if TYPE_CHECKING:  # mypy cannot follow db.Model, a class made at run time from Base
    Model = Base
else:
    Model = db.Model

ROLES = ("admin", "viewer")
SOURCES = {"local": "local", "ldap": "LDAP", "oidc": "OpenID Connect"}
TOKEN_ROLES = ("admin", "viewer", "service")


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


class UtcDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every database (SQLite returns naive values otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return None if value is None else value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value


class User(UserMixin, Model):
    """A person who logs in to the console."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(80), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="viewer")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    # part of every session's user id: logging out (or a new password) raises it, which ends every
    # session of this user on the server, so a replayed cookie is refused
    session_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # where the user signs in: "local" (a password here), "ldap" or "oidc" (no local password; the role
    # comes from the groups of every sign-in), and those groups as the provider gave them last
    source: Mapped[str] = mapped_column(String(16), default="local", server_default="local")
    groups: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    last_sign_in_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)
        self.end_sessions()

    def check_password(self, password: str) -> bool:
        """True for the right local password; never for a user of a provider (no local password)."""
        if self.source != "local" or not self.password_hash:
            return False
        return check_password_hash(self.password_hash, password)

    def get_id(self) -> str:
        """The session's user id: id and session generation."""
        return f"{self.id}:{self.session_generation or 0}"

    def end_sessions(self) -> None:
        """End every session of this user (the caller commits)."""
        self.session_generation = (self.session_generation or 0) + 1

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class ApiToken(Model):
    """A bearer token for the JSON API; only its SHA-256 digest is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    role: Mapped[str] = mapped_column(String(16), default="viewer")
    service: Mapped[str | None] = mapped_column(String(120))   # the service a service token is for
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(80))
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class BrokerSettings(Model):
    """The saved settings of one protocol: plain values by field name, secrets encrypted."""

    __tablename__ = "broker_settings"

    protocol: Mapped[str] = mapped_column(String(16), primary_key=True)
    values: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    secrets: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow,
                                                    onupdate=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(80))


class TlsFile(Model):
    """Uploaded TLS material of one protocol: the truststore (slot tls_ca) or the client
    certificate with its key (slot tls_cert). The key is encrypted at rest."""

    __tablename__ = "tls_files"
    __table_args__ = (UniqueConstraint("protocol", "slot"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    protocol: Mapped[str] = mapped_column(ForeignKey("broker_settings.protocol", ondelete="CASCADE"))
    slot: Mapped[str] = mapped_column(String(16))
    filename: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(16))
    certs_pem: Mapped[str] = mapped_column(Text)
    key_ciphertext: Mapped[str | None] = mapped_column(Text)
    uploaded_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    uploaded_by: Mapped[str | None] = mapped_column(String(80))


class StagedCertificate(Model):
    """A client certificate and its key staged next to a protocol's current one: tried with Test
    connection and Diagnose, then promoted (an ordinary change) or discarded. Not part of the
    versioned configuration, so staging never changes what services get. The key is encrypted."""

    __tablename__ = "staged_certificates"

    protocol: Mapped[str] = mapped_column(String(16), primary_key=True)
    filename: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(16))
    certs_pem: Mapped[str] = mapped_column(Text)
    key_ciphertext: Mapped[str] = mapped_column(Text)
    staged_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    staged_by: Mapped[str | None] = mapped_column(String(80))


class Priority(Model):
    """One protocol's place in the priority list (0 = first choice)."""

    __tablename__ = "priorities"

    protocol: Mapped[str] = mapped_column(String(16), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, unique=True)


class BrokerCheck(Model):
    """One connection check's result; the newest per protocol is what /readyz and the page show."""

    __tablename__ = "broker_checks"
    __table_args__ = (Index("ix_broker_checks_protocol_checked_at", "protocol", "checked_at"),
                      Index("ix_broker_checks_protocol_digest", "protocol", "settings_digest"))

    id: Mapped[int] = mapped_column(primary_key=True)
    protocol: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(8))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    cause: Mapped[str] = mapped_column(String(40), default="ok")
    message: Mapped[str] = mapped_column(Text, default="")
    identity: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    target: Mapped[str] = mapped_column(String(255), default="")
    origin: Mapped[str] = mapped_column(String(16), default="scheduler")
    checked_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    # keyed digest of the effective settings the check ran with (console.checks.settings_digest);
    # a result whose digest is not the current settings' is never shown as current
    settings_digest: Mapped[str | None] = mapped_column(String(64))
    # one entry per node of a cluster setting ({"node", "status", "cause", "message", "latency_ms",
    # "advertised"?}: console.brokers.nodes); None for results stored before nodes were recorded
    nodes: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)


class CheckLease(Model):
    """When each protocol is next due for a background check, and who holds it. Claiming is one
    conditional UPDATE, so several workers or replicas on one database check each protocol at most
    once per interval."""

    __tablename__ = "check_leases"

    protocol: Mapped[str] = mapped_column(String(16), primary_key=True)
    due_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    holder: Mapped[str | None] = mapped_column(String(80))
    # the settings digest of the last claimed check: other settings make the protocol due at once
    settings_digest: Mapped[str | None] = mapped_column(String(64))


class ExtensionService(Model):
    """An extension service of the platform and the protocols it supports."""

    __tablename__ = "services"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    protocols: Mapped[list[str]] = mapped_column(JSON, default=list)
    registered_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
    callback_url: Mapped[str | None] = mapped_column(String(2048))
    signing_secret: Mapped[str | None] = mapped_column(Text)          # encrypted at rest
    # what it should run: the configuration version that last changed its document, and the
    # document's ETag
    config_version: Mapped[int | None] = mapped_column(Integer)
    config_etag: Mapped[str | None] = mapped_column(String(64))
    # what it fetched last, and what it acknowledged
    fetched_version: Mapped[int | None] = mapped_column(Integer)
    fetched_etag: Mapped[str | None] = mapped_column(String(64))
    fetched_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    fetched_from: Mapped[str | None] = mapped_column(String(64))
    acked_version: Mapped[int | None] = mapped_column(Integer)
    acked_etag: Mapped[str | None] = mapped_column(String(64))
    ack_status: Mapped[str | None] = mapped_column(String(16))
    ack_message: Mapped[str | None] = mapped_column(Text)
    acked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    # with a failed acknowledgement: {"agent": the network steps (DNS → TCP → TLS) the service's agent
    # ran from its own host, "console": the console's newest check of that protocol at that moment}
    ack_diagnosis: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # a diagnosis asked for from the page: the request its agent is told about (a header of its
    # configuration answers) until it sends the network steps, and the newest steps it sent (the same
    # {"agent", "console", "summary"} as ack_diagnosis, with "request", "requested_by", "received_at")
    diagnosis_request: Mapped[str | None] = mapped_column(String(32))
    diagnosis_requested_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    diagnosis_requested_by: Mapped[str | None] = mapped_column(String(120))
    requested_diagnosis: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Delivery(Model):
    """One callback to a service in the outbox: written in the transaction of the change it
    announces, claimed by one replica at a time, retried with backoff, coalesced by newer ones."""

    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_deliveries_state_due", "state", "due_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id", ondelete="CASCADE"),
                                            index=True)
    version: Mapped[int] = mapped_column(Integer)
    etag: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(String(2048))
    state: Mapped[str] = mapped_column(String(12), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(80))
    claimed_until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


class Adapter(Model):
    """An adapter created against a service, with the effective settings it was created with
    (protocol, address, TLS/SASL identity — never secrets)."""

    __tablename__ = "adapters"
    __table_args__ = (Index("ix_adapters_protocol_snapshot", "protocol", "snapshot_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id", ondelete="CASCADE"),
                                            index=True)
    protocol: Mapped[str] = mapped_column(String(16))
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSON)
    snapshot_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(80))


class AuditEntry(Model):
    """Who changed what, when and from where; secrets appear only as "changed"."""

    __tablename__ = "audit_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(80))
    origin: Mapped[str] = mapped_column(String(16))
    remote: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(24))
    protocols: Mapped[str] = mapped_column(String(64), default="")
    summary: Mapped[str] = mapped_column(Text, default="")
    changes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    version_id: Mapped[int | None] = mapped_column(Integer)


class ConfigVersion(Model):
    """The whole saved configuration after a change (secrets and keys as stored: encrypted)."""

    __tablename__ = "config_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(80))
    origin: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[dict[str, Any]] = mapped_column(JSON)


class Rollout(Model):
    """A change's roll-out in waves: the first wave gets `version`, every other service keeps being
    served `from_version` until the wave acknowledged `applied` by `deadline_at`; a `failed`
    acknowledgement or a missed deadline halts it. State: wave, halted, released, rolled_back."""

    __tablename__ = "rollouts"
    __table_args__ = (Index("ix_rollouts_state", "state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    from_version: Mapped[int] = mapped_column(Integer)
    wave: Mapped[list[str]] = mapped_column(JSON, default=list)
    share: Mapped[int | None] = mapped_column(Integer)
    deadline_seconds: Mapped[int] = mapped_column(Integer)
    auto_rollback: Mapped[bool] = mapped_column(default=False)
    state: Mapped[str] = mapped_column(String(16), default="wave")
    reason: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(80), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    deadline_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    halted_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


class DiagnosisRun(Model):
    """One diagnosis: its steps are written as they complete, so a page can follow it."""

    __tablename__ = "diagnosis_runs"
    __table_args__ = (Index("ix_diagnosis_runs_protocol_id", "protocol", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    protocol: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(12), default="running")
    ok: Mapped[bool | None] = mapped_column()
    cause: Mapped[str | None] = mapped_column(String(40))
    actor: Mapped[str | None] = mapped_column(String(80))
    origin: Mapped[str] = mapped_column(String(16), default="page")
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class RateLimitCounter(Model):
    """One fixed-window counter of a rate limit (login attempts), shared by every worker and
    replica through the database."""

    __tablename__ = "rate_limit_counters"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class PendingSecrets(Model):
    """Secrets typed into a form that was not saved yet (the save guard or a confirmation asked
    first), held encrypted for the user who typed them until "Save anyway"/"Confirm" or expiry; the
    form carries only the random id, never the secrets."""

    __tablename__ = "pending_secrets"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    scope: Mapped[str] = mapped_column(String(40))
    values: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
