"""Git links: `git_links` (a function's repository, branch, webhook secret, auto
deploy), `git_deliveries` (push deliveries acted on), and the commit and deploy
flag of builds a push started.

Revision ID: 0012
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "git_links",
        sa.Column("function_id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("repository", sa.String(length=1000), nullable=False),
        sa.Column("repository_key", sa.String(length=1000), nullable=False),
        sa.Column("branch", sa.String(length=255), nullable=False),
        sa.Column("subdirectory", sa.String(length=500), nullable=False),
        sa.Column("language", sa.String(length=32), nullable=False),
        sa.Column("auto_deploy", sa.Boolean(), nullable=False),
        sa.Column("secret_backend", sa.String(length=16), nullable=False),
        sa.Column("secret_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("actor_kind", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["function_id"], ["functions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("function_id"),
    )
    op.create_index("ix_git_links_repository_key", "git_links", ["repository_key"])
    op.create_table(
        "git_deliveries",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("function_id", sa.String(length=36), nullable=False),
        sa.Column("delivery_id", sa.String(length=100), nullable=False),
        sa.Column("commit", sa.String(length=64), nullable=False),
        sa.Column("build_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["function_id"], ["functions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("function_id", "delivery_id", name="uq_git_deliveries_delivery"),
    )
    with op.batch_alter_table("builds") as batch:
        batch.add_column(sa.Column("git_commit", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column("auto_deploy", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.drop_column("auto_deploy")
        batch.drop_column("git_commit")
    op.drop_table("git_deliveries")
    op.drop_index("ix_git_links_repository_key", table_name="git_links")
    op.drop_table("git_links")
