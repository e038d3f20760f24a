"""Project quotas: `project_quotas`, one row per project whose quotas the admin set.

A NULL column means the node's default; a project without a row gets the
defaults for every quota.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "project_quotas",
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("max_concurrency", sa.BigInteger(), nullable=True),
        sa.Column("invocations_per_minute", sa.BigInteger(), nullable=True),
        sa.Column("cpu_seconds_per_day", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("project_id"),
    )


def downgrade() -> None:
    op.drop_table("project_quotas")
