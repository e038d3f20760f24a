"""Route claims: which project holds each host, and each path on the `*` host.

Claims are derived from the existing routes, oldest first: a route's project takes
its claim unless another project already holds one that overlaps it
(`edgefn.contract.tenancy`, the rule the API and the edge apply). The later of two
overlapping routes stays in `routes` but no longer reaches the nodes, and its
project sees 409 if it creates it again; the admin can reassign the claim.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

from edgefn.contract.tenancy import Claims, claim_key, claim_of

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    claims_table = op.create_table(
        "route_claims",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("path", sa.String(length=1000), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("pinned", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("host", "path", name="uq_route_claims_host_path"),
    )
    op.create_index("ix_route_claims_project_id", "route_claims", ["project_id"])
    conn = op.get_bind()
    routes = sa.table(
        "routes",
        sa.column("id", sa.String()),
        sa.column("host", sa.String()),
        sa.column("path", sa.String()),
        sa.column("function_id", sa.String()),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    functions = sa.table("functions", sa.column("id", sa.String()), sa.column("project_id"))
    existing = conn.execute(
        sa.select(routes.c.host, routes.c.path, functions.c.project_id, routes.c.created_at)
        .join(functions, functions.c.id == routes.c.function_id)
        .order_by(routes.c.created_at, routes.c.id)
    )
    claims = Claims()
    rows: dict[tuple[str, str], dict[str, object]] = {}
    for host, path, project_id, created_at in existing:
        key = claim_key(host, path)
        claim = claim_of(host, path)
        if key in rows or claims.other_holder(claim, project_id) is not None:
            continue
        claims.add(claim, project_id)
        rows[key] = {
            "id": str(uuid.uuid4()),
            "host": key[0],
            "path": key[1],
            "project_id": project_id,
            "pinned": False,
            "created_at": created_at,
        }
    if rows:
        op.bulk_insert(claims_table, list(rows.values()))


def downgrade() -> None:
    op.drop_index("ix_route_claims_project_id", table_name="route_claims")
    op.drop_table("route_claims")
