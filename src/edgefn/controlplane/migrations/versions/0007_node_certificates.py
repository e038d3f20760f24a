"""Node certificates: `node_certificates`, every client certificate the CP's CA
issued to a node, by serial, with its expiry and when it was revoked.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_certificates",
        sa.Column("serial", sa.String(length=40), nullable=False),
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("serial"),
    )
    op.create_index("ix_node_certificates_node_id", "node_certificates", ["node_id"])


def downgrade() -> None:
    op.drop_index("ix_node_certificates_node_id", table_name="node_certificates")
    op.drop_table("node_certificates")
