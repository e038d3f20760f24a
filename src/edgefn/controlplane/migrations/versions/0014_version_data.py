"""Version data: a version's data archive (a tar.gz its WAGI volumes mount), with
its store key, sha256, size and mount map; NULL for a version without one.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_COLUMNS = ("data_key", "data_sha256", "data_size", "data_mounts")


def upgrade() -> None:
    with op.batch_alter_table("function_versions") as batch:
        batch.add_column(sa.Column("data_key", sa.String(length=300), nullable=True))
        batch.add_column(sa.Column("data_sha256", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("data_size", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("data_mounts", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("function_versions") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
