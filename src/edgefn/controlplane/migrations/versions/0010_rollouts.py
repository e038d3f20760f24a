"""Rollouts: a deployment's rollout state machine (state, wave, gates, bake start,
the figures behind each decision), and each node's per-version invocation figures.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("rollout_state", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("wave", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("gates", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("bake_started_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("decisions", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("reason", sa.String(length=1000), nullable=True))
        batch.add_column(sa.Column("rollback_id", sa.String(length=36), nullable=True))
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("version_stats", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("version_stats")
    with op.batch_alter_table("deployments") as batch:
        for name in ("rollback_id", "reason", "decisions", "bake_started_at", "gates", "wave",
                     "rollout_state"):
            batch.drop_column(name)
