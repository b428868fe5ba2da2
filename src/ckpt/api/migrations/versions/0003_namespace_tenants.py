"""Namespace tenants and token roles.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08

Existing tenants stay admin tenants and existing tokens keep the whole contract on their
tenant (role `tenant`). The records the operator kept in its one tenant move to their
namespace's tenant when the operator, now with an `operator` token, starts
(`ckpt.api.tenants.adopt_namespace_records`): only the operator's token says which tenant that
was, so this revision cannot.

Plain ADD COLUMN, never a batch rebuild of `tenants`: on SQLite a rebuild drops the table,
and with foreign keys on that cascades into every token and checkpoint.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "tenants", sa.Column("kind", sa.String(16), nullable=False, server_default="tenant")
    )
    op.add_column(
        "tokens", sa.Column("role", sa.String(16), nullable=False, server_default="tenant")
    )


def downgrade() -> None:
    # Their records and tokens go with them (ON DELETE CASCADE): before this revision nothing
    # could reach them.
    op.execute("DELETE FROM tenants WHERE kind <> 'tenant'")
    # DROP COLUMN in place (SQLite 3.35 and later), for the same reason as above.
    op.execute("ALTER TABLE tokens DROP COLUMN role")
    op.execute("ALTER TABLE tenants DROP COLUMN kind")
