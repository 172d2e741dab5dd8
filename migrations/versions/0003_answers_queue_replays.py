"""Response rules, the auto-forward queue, edited/re-signed replays and config-file bins.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bins") as batch:
        batch.add_column(sa.Column("responses", sa.JSON, nullable=True))
        batch.add_column(
            sa.Column("managed", sa.Boolean, nullable=False, server_default=sa.false())
        )
    op.create_table(
        "rule_hits",
        sa.Column(
            "bin_id",
            sa.String(64),
            sa.ForeignKey("bins.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("rule_id", sa.String(64), primary_key=True),
        sa.Column("hits", sa.BigInteger, nullable=False),
    )
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("answer_status", sa.Integer, nullable=True))
        batch.add_column(sa.Column("answer_rule", sa.String(64), nullable=True))
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("request_suffix", sa.Text, nullable=True))
        batch.add_column(sa.Column("request_headers", sa.JSON, nullable=True))
        batch.add_column(sa.Column("request_body", sa.LargeBinary, nullable=True))
        batch.add_column(
            sa.Column("edited", sa.Boolean, nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("resigned", sa.String(32), nullable=True))
        batch.add_column(sa.Column("queue_id", sa.Integer, nullable=True))
        batch.add_column(sa.Column("try_no", sa.Integer, nullable=True))
    op.create_table(
        "forward_queue",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "request_seq",
            sa.BigInteger,
            sa.ForeignKey("requests.seq", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "bin_id",
            sa.String(64),
            sa.ForeignKey("bins.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("tries", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_forward_queue_due", "forward_queue", ["state", "next_at"])
    op.create_index("ix_forward_queue_bin", "forward_queue", ["bin_id", "state", "request_seq"])
    op.create_index("ix_forward_queue_request", "forward_queue", ["request_seq"])


def downgrade() -> None:
    op.drop_index("ix_forward_queue_request", table_name="forward_queue")
    op.drop_index("ix_forward_queue_bin", table_name="forward_queue")
    op.drop_index("ix_forward_queue_due", table_name="forward_queue")
    op.drop_table("forward_queue")
    with op.batch_alter_table("attempts") as batch:
        for name in (
            "try_no",
            "queue_id",
            "resigned",
            "edited",
            "request_body",
            "request_headers",
            "request_suffix",
        ):
            batch.drop_column(name)
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("answer_rule")
        batch.drop_column("answer_status")
    op.drop_table("rule_hits")
    with op.batch_alter_table("bins") as batch:
        batch.drop_column("managed")
        batch.drop_column("responses")
