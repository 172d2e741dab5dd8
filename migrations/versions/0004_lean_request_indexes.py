"""Leaner request tables: the sequence is the row id, no index on the public id, a partial
delivery-id index.

Every capture writes one row to ``requests`` and one to ``request_bodies``. Before this revision
SQLite kept each of them in a table b-tree plus a separate index b-tree for the ``BIGINT``
primary key (only a column declared exactly ``INTEGER PRIMARY KEY`` becomes the row id), plus a
unique index on ``requests.id`` that no query uses (lookups go by the sequence, which the public
id begins with), plus a delivery-id index holding every row, most without a delivery id. A commit
of six captures wrote about 15 pages to the log; now it writes about half as many.

SQLite cannot change a primary key in place, so both tables are rebuilt (the steps of SQLite's
"making other kinds of table schema changes"). ``migrations/env.py`` runs SQLite migrations with
foreign keys off, without which dropping the old ``requests`` table would cascade into the
bodies, attempts and forward queue. The rebuild copies every stored request once. PostgreSQL
keeps its ``BIGINT`` keys (a heap table has no such extra b-tree) and only loses the two indexes'
dead weight.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_REQUEST_COLUMNS = (
    "seq, id, bin_id, method, path, query_string, headers, header_source, content_type, "
    "body_size, remote_addr, received_at, signature, signing_rev, delivery_id, duplicate_of, "
    "answer_status, answer_rule"
)


def _requests_table(name: str, seq_type: sa.types.TypeEngine, unique_id: bool) -> list:
    return [
        name,
        sa.Column("seq", seq_type, primary_key=True, autoincrement=False),
        sa.Column("id", sa.String(40), nullable=False, unique=unique_id),
        sa.Column(
            "bin_id", sa.String(64), sa.ForeignKey("bins.id", ondelete="CASCADE"), nullable=False
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
        sa.Column("signature", sa.JSON, nullable=True),
        sa.Column("signing_rev", sa.Integer, nullable=True),
        sa.Column("delivery_id", sa.String(255), nullable=True),
        sa.Column("duplicate_of", sa.String(40), nullable=True),
        sa.Column("answer_status", sa.Integer, nullable=True),
        sa.Column("answer_rule", sa.String(64), nullable=True),
    ]


def _bodies_table(name: str, seq_type: sa.types.TypeEngine) -> list:
    return [
        name,
        sa.Column(
            "request_seq",
            seq_type,
            sa.ForeignKey("requests.seq", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("data", sa.LargeBinary, nullable=False),
    ]


def _delivery_index(partial: bool) -> None:
    where = sa.text("delivery_id IS NOT NULL") if partial else None
    op.create_index(
        "ix_requests_bin_delivery",
        "requests",
        ["bin_id", "delivery_id", "seq"],
        sqlite_where=where,
        postgresql_where=where,
    )


def _check_foreign_keys_off() -> None:
    bind = op.get_bind()
    if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError(
            "revision 0004 rebuilds tables and must run with SQLite foreign keys off "
            "(run it through `hookbin migrate` or `alembic upgrade`, whose env.py does that)"
        )


def _rebuild_sqlite(seq_type: sa.types.TypeEngine, unique_id: bool, partial: bool) -> None:
    _check_foreign_keys_off()
    op.create_table(*_requests_table("requests_rebuilt", seq_type, unique_id))
    op.execute(
        f"INSERT INTO requests_rebuilt ({_REQUEST_COLUMNS}) "  # noqa: S608 - fixed names only
        f"SELECT {_REQUEST_COLUMNS} FROM requests"
    )
    op.create_table(*_bodies_table("request_bodies_rebuilt", seq_type))
    op.execute(
        "INSERT INTO request_bodies_rebuilt (request_seq, data) "
        "SELECT request_seq, data FROM request_bodies"
    )
    # The indexes go with their tables.
    op.execute("DROP TABLE request_bodies")
    op.execute("DROP TABLE requests")
    op.execute("ALTER TABLE requests_rebuilt RENAME TO requests")
    op.execute("ALTER TABLE request_bodies_rebuilt RENAME TO request_bodies")
    op.create_index("ix_requests_bin_seq", "requests", ["bin_id", "seq"])
    _delivery_index(partial)
    broken = op.get_bind().exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"foreign keys broken by the rebuild: {broken[:5]}")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(sa.Integer(), unique_id=False, partial=True)
        return
    op.drop_index("ix_requests_bin_delivery", table_name="requests")
    _delivery_index(partial=True)
    for constraint in sa.inspect(op.get_bind()).get_unique_constraints("requests"):
        if constraint["column_names"] == ["id"]:
            op.drop_constraint(constraint["name"], "requests", type_="unique")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(sa.BigInteger(), unique_id=True, partial=False)
        return
    op.drop_index("ix_requests_bin_delivery", table_name="requests")
    _delivery_index(partial=False)
    op.create_unique_constraint("requests_id_key", "requests", ["id"])
