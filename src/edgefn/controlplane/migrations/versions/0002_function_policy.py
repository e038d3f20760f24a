"""Function policies: `functions.policy`, the edge's `FunctionPolicy` as JSON.

Existing functions get `{}`, which reads as every field at its default: KV off,
no outbound hosts, instances reused. A plain ADD COLUMN (no table rebuild) keeps
SQLite from cascading a rebuild's DROP TABLE into `function_versions`.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "functions",
        sa.Column("policy", sa.JSON(), nullable=False, server_default=sa.text("'{}'")),
    )


def downgrade() -> None:
    # SQLite 3.35+ drops a column in place; a rebuild would cascade as above.
    op.drop_column("functions", "policy")
