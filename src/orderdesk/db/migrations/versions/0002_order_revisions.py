"""order revisions for reply caches

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05 10:00:00

Adds `order_revisions`, the per-order counter that `orderdesk.orders.revision`
raises on every committed write to an order. Existing orders need no rows: a
missing row is revision 0, and the first write creates it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "order_revisions",
        sa.Column("order_id", sa.String(length=36), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_order_revisions")),
    )


def downgrade() -> None:
    op.drop_table("order_revisions")
