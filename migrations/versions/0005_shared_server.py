"""A server shared on the internet: bin secrets, retention and caps, sender allowlists, share
links, rate counters and the instance's own secret.

- ``bins.token_hash``: SHA-256 of the bin's API token (the token is shown once); ``bins.page_key_salt``:
  what the key in the bin's view URL is derived from, so holders can copy the link again and a new
  salt revokes every old link. Bins made before this revision have neither: only operators reach
  them until an operator gives them a token.
- ``bins.retention_seconds`` and ``bins.max_requests``: per-bin overrides of the server's retention
  and cap (NULL: the server's setting; 0: none).
- ``bins.senders`` (a list of addresses and CIDR ranges) and ``bins.senders_action`` ("refuse" or
  "mark"); ``requests.sender_unlisted`` is true for a request kept from a sender outside the list.
- ``bin_shares``: revocable read-only links to a bin.
- ``rate_counters``: hits per scope, key and time window, shared by every process and host.
- ``instance_secrets``: random secrets every process of a deployment shares (the cookie key), made
  here once so that no operator has to configure one.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bins") as batch:
        batch.add_column(sa.Column("token_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("page_key_salt", sa.String(64), nullable=True))
        batch.add_column(sa.Column("retention_seconds", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("max_requests", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("senders", sa.JSON, nullable=True))
        batch.add_column(sa.Column("senders_action", sa.String(8), nullable=True))
    # A plain ADD COLUMN: SQLite does not rebuild the table for a nullable column.
    op.add_column("requests", sa.Column("sender_unlisted", sa.Boolean, nullable=True))
    op.create_table(
        "bin_shares",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "bin_id",
            sa.String(64),
            sa.ForeignKey("bins.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("label", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Index("ix_bin_shares_bin", "bin_id"),
    )
    op.create_table(
        "rate_counters",
        sa.Column("scope", sa.String(16), primary_key=True),
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("window", sa.BigInteger, primary_key=True),
        sa.Column("hits", sa.BigInteger, nullable=False),
    )
    secrets_table = op.create_table(
        "instance_secrets",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.bulk_insert(secrets_table, [{"name": "cookie_key", "value": secrets.token_urlsafe(32)}])


def downgrade() -> None:
    op.drop_table("instance_secrets")
    op.drop_table("rate_counters")
    op.drop_table("bin_shares")
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("sender_unlisted")
    with op.batch_alter_table("bins") as batch:
        for column in (
            "senders_action",
            "senders",
            "max_requests",
            "retention_seconds",
            "page_key_salt",
            "token_hash",
        ):
            batch.drop_column(column)
