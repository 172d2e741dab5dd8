"""Signature verdicts and duplicate deliveries.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bins") as batch:
        batch.add_column(sa.Column("signing", sa.JSON, nullable=True))
        batch.add_column(
            sa.Column("signing_rev", sa.Integer, nullable=False, server_default=sa.text("0"))
        )
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("signature", sa.JSON, nullable=True))
        batch.add_column(sa.Column("signing_rev", sa.Integer, nullable=True))
        batch.add_column(sa.Column("delivery_id", sa.String(255), nullable=True))
        batch.add_column(sa.Column("duplicate_of", sa.String(40), nullable=True))
    op.create_index("ix_requests_bin_delivery", "requests", ["bin_id", "delivery_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_requests_bin_delivery", table_name="requests")
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("duplicate_of")
        batch.drop_column("delivery_id")
        batch.drop_column("signing_rev")
        batch.drop_column("signature")
    with op.batch_alter_table("bins") as batch:
        batch.drop_column("signing_rev")
        batch.drop_column("signing")
