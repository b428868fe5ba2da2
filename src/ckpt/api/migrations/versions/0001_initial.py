"""Tenants, tokens and checkpoints.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("name", name="uq_tenants_name"),
    )
    op.create_table(
        "tokens",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column(
            "tenant_id",
            big_id,
            sa.ForeignKey("tenants.id", ondelete="CASCADE", name="fk_tokens_tenant"),
            nullable=False,
        ),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("token_hash", name="uq_tokens_hash"),
    )
    op.create_table(
        "checkpoints",
        sa.Column("seq", big_id, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column(
            "tenant_id",
            big_id,
            sa.ForeignKey("tenants.id", ondelete="CASCADE", name="fk_checkpoints_tenant"),
            nullable=False,
        ),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("gpu", sa.Text(), nullable=False),
        sa.Column("platform", sa.Text(), nullable=False),
        sa.Column("checksum", sa.Text(), nullable=True),
        sa.Column("info", sa.JSON(), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("restore_path", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("deprecated_at", sa.DateTime(), nullable=True),
        sa.UniqueConstraint("id", name="uq_checkpoints_id"),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name="uq_checkpoints_tenant_idem"),
    )
    op.create_index("ix_checkpoints_tenant_seq", "checkpoints", ["tenant_id", "seq"])
    op.create_index(
        "ix_checkpoints_status_deprecated_at", "checkpoints", ["status", "deprecated_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_checkpoints_status_deprecated_at", table_name="checkpoints")
    op.drop_index("ix_checkpoints_tenant_seq", table_name="checkpoints")
    op.drop_table("checkpoints")
    op.drop_table("tokens")
    op.drop_table("tenants")
