"""SQLAlchemy 2 mapping of the service's tables. Alembic migrations create them; this module
only describes them to the ORM and must stay in step with `migrations/versions`."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only aliases INTEGER PRIMARY KEY to the rowid; BIGINT elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    # Naive UTC everywhere: SQLite has no time zones, and one convention avoids mixed compares.
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


NAMESPACE_PREFIX = "namespace:"


class TenantKind(StrEnum):
    # Made by an admin (`ckpt api token create`): an organisation, a Cedana client.
    tenant = "tenant"
    # Made by the API for the operator: one per Kubernetes namespace (NAMESPACE_PREFIX + it).
    namespace = "namespace"


class Role(StrEnum):
    """What a token may do (revision 0003)."""

    # The whole contract on its own tenant: what every token could do before roles.
    tenant = "tenant"
    # Only reads of its own tenant: what a namespace's users get.
    reader = "reader"
    # The contract on any namespace tenant named per request (X-Ckpt-Tenant), and minting
    # readers for them: the operator's.
    operator = "operator"


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # A namespace tenant's name is NAMESPACE_PREFIX + the namespace, a prefix admin tenants
    # may not take: both kinds share this unique column without colliding.
    name: Mapped[str] = mapped_column(String(253), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default=TenantKind.tenant.value)
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)


class Token(Base):
    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    # sha256 hex of the token; the clear token is shown once and never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)
    # Revision 0002. Revoked tokens are kept (marked, not deleted) so that `token list` still
    # shows what existed and when it stopped working.
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    role: Mapped[str] = mapped_column(String(16), default=Role.tenant.value)


class CheckpointRow(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_checkpoints_tenant_idem"),
        Index("ix_checkpoints_tenant_seq", "tenant_id", "seq"),
        Index("ix_checkpoints_status_deprecated_at", "status", "deprecated_at"),
    )

    # `seq` orders pages and backs the cursor; the public id is a random UUID.
    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(32))
    gpu: Mapped[str] = mapped_column(Text(), default="")
    platform: Mapped[str] = mapped_column(Text(), default="")
    checksum: Mapped[str | None] = mapped_column(Text(), nullable=True)
    info: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)
    name: Mapped[str | None] = mapped_column(Text(), nullable=True)
    restore_path: Mapped[str | None] = mapped_column(Text(), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)
    deprecated_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
