"""Secrets of projects, and the POP targets a deployment was given.

`secrets` holds one row per (project, name): the built-in store's ciphertext or,
for an external store (Vault), no value at all. `deployments.target_pop` records
a deploy's `target_pop` (NULL: every node its selector matches), so a node that
registers later is sent only what a deployment targeted. Plain CREATE TABLE and
ADD COLUMN: no table rebuild, as in 0002.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "secrets",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("backend", sa.String(length=16), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "name", name="uq_secrets_project_name"),
    )
    op.add_column("deployments", sa.Column("target_pop", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("deployments", "target_pop")
    op.drop_table("secrets")
