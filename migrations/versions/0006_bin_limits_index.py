"""An index of the bins that set their own retention or cap, for the background purge.

Partial: only bins with an override are in it, so the purge reads them every pass without
scanning every bin, and captures (which never write ``bins``) pay nothing for it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_HAS_LIMITS = sa.text("retention_seconds IS NOT NULL OR max_requests IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_bins_limits",
        "bins",
        ["id"],
        sqlite_where=_HAS_LIMITS,
        postgresql_where=_HAS_LIMITS,
    )


def downgrade() -> None:
    op.drop_index("ix_bins_limits", table_name="bins")
