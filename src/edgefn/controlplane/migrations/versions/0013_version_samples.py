"""Version samples: each node's per-version requests, errors and latency histogram
per ten-second bucket, the series behind the console's charts.

Revision ID: 0013
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "version_samples",
        sa.Column("function_id", sa.String(length=36), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("latency", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["function_id"], ["functions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("function_id", "at", "version", "node_id"),
    )
    op.create_index("ix_version_samples_at", "version_samples", ["at"])


def downgrade() -> None:
    op.drop_index("ix_version_samples_at", table_name="version_samples")
    op.drop_table("version_samples")
