"""Bins, captured requests, bodies, replay attempts.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bins",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("forward_url", sa.Text, nullable=True),
        sa.Column("auto_forward", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    counters = op.create_table(
        "counters",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(counters, [{"name": "requests", "value": 0}])
    op.create_table(
        "requests",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column(
            "bin_id",
            sa.String(64),
            sa.ForeignKey("bins.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("query_string", sa.Text, nullable=False),
        sa.Column("headers", sa.JSON, nullable=False),
        sa.Column("header_source", sa.String(16), nullable=False),
        sa.Column("content_type", sa.Text, nullable=True),
        sa.Column("body_size", sa.BigInteger, nullable=False),
        sa.Column("remote_addr", sa.String(64), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_requests_bin_seq", "requests", ["bin_id", "seq"])
    op.create_table(
        "request_bodies",
        sa.Column(
            "request_seq",
            sa.BigInteger,
            sa.ForeignKey("requests.seq", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "request_seq",
            sa.BigInteger,
            sa.ForeignKey("requests.seq", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Integer, nullable=True),
        sa.Column("response_headers", sa.JSON, nullable=False),
        sa.Column("response_body", sa.LargeBinary, nullable=False),
        sa.Column("response_size", sa.BigInteger, nullable=False),
        sa.Column("truncated", sa.Boolean, nullable=False),
        sa.Column("elapsed_ms", sa.Float, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index("ix_attempts_request", "attempts", ["request_seq", "id"])


def downgrade() -> None:
    op.drop_index("ix_attempts_request", table_name="attempts")
    op.drop_table("attempts")
    op.drop_table("request_bodies")
    op.drop_index("ix_requests_bin_seq", table_name="requests")
    op.drop_table("requests")
    op.drop_table("counters")
    op.drop_table("bins")
