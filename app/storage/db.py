"""Database schema and engine construction.

The schema is SQLAlchemy Core: the capture path inserts plain rows in batches and reads them back as
dictionaries, so an ORM's identity map would only cost time. Alembic migrations in ``migrations/``
create exactly these tables.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from app.core import fastjson

metadata = sa.MetaData()

_HAS_LIMITS = sa.text("retention_seconds IS NOT NULL OR max_requests IS NOT NULL")

bins = sa.Table(
    "bins",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # Default replay/forward target, remembered per bin.
    sa.Column("forward_url", sa.Text, nullable=True),
    sa.Column("auto_forward", sa.Boolean, nullable=False, server_default=sa.false()),
    # {"provider": "auto" | one of app.signing.common.PROVIDERS, "secrets": [...]}, or NULL.
    sa.Column("signing", sa.JSON, nullable=True),
    # Bumped whenever ``signing`` changes; a request whose verdict was computed under an older
    # revision is checked again when it is next read.
    sa.Column("signing_rev", sa.Integer, nullable=False, server_default=sa.text("0")),
    # What the capture URL answers: {"default": {...} | None, "rules": [...]} (app.rules), or
    # NULL for the standard JSON acknowledgement.
    sa.Column("responses", sa.JSON, nullable=True),
    # True for bins defined by the HOOKBIN_BINS_FILE config file: their settings are rewritten
    # from that file at every start.
    sa.Column("managed", sa.Boolean, nullable=False, server_default=sa.false()),
    # SHA-256 of the bin's API token (shown once), and the salt its view-URL key is derived from
    # (a new salt revokes old links). NULL: only operators reach the bin.
    sa.Column("token_hash", sa.String(64), nullable=True),
    sa.Column("page_key_salt", sa.String(64), nullable=True),
    # Overrides of the server's retention and cap (NULL: the server's setting; 0: none).
    sa.Column("retention_seconds", sa.BigInteger, nullable=True),
    sa.Column("max_requests", sa.BigInteger, nullable=True),
    # Addresses and CIDR ranges allowed to send, and what happens to others ("refuse", "mark").
    sa.Column("senders", sa.JSON, nullable=True),
    sa.Column("senders_action", sa.String(8), nullable=True),
    # The purge reads the few bins with their own limits every pass, without scanning all bins.
    sa.Index(
        "ix_bins_limits",
        "id",
        sqlite_where=_HAS_LIMITS,
        postgresql_where=_HAS_LIMITS,
    ),
)

# How many requests each counting rule (e.g. "fail the first N") has matched so far. Kept in the
# database so that every process and host of one deployment counts together.
rule_hits = sa.Table(
    "rule_hits",
    metadata,
    sa.Column(
        "bin_id", sa.String(64), sa.ForeignKey("bins.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("rule_id", sa.String(64), primary_key=True),
    sa.Column("hits", sa.BigInteger, nullable=False),
)

# One row per named sequence. Writers bump it inside their transaction, which both hands out
# request sequence numbers and serialises writers, so sequence order is commit order: a viewer that
# has seen request N can never later find a committed request below N.
counters = sa.Table(
    "counters",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

#: Request sequence numbers: BIGINT, and on SQLite the INTEGER that makes the column the row id.
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

requests = sa.Table(
    "requests",
    metadata,
    # On SQLite the sequence is the row id (only a column declared exactly INTEGER PRIMARY KEY
    # is), so a row costs one b-tree rather than a table plus a primary-key index.
    sa.Column("seq", _SEQ, primary_key=True, autoincrement=False),
    # Public id: the sequence in fixed-width hex (sorts in capture order) plus 80 random bits, so
    # that knowing one request id reveals nothing about other bins' requests. Not indexed: every
    # lookup goes by the sequence the id begins with, then checks the whole id.
    sa.Column("id", sa.String(40), nullable=False),
    sa.Column(
        "bin_id", sa.String(64), sa.ForeignKey("bins.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("method", sa.String(64), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("query_string", sa.Text, nullable=False),
    # [[name, value], ...] in arrival order, repeats kept.
    sa.Column("headers", sa.JSON, nullable=False),
    sa.Column("header_source", sa.String(16), nullable=False),
    sa.Column("content_type", sa.Text, nullable=True),
    sa.Column("body_size", sa.BigInteger, nullable=False),
    sa.Column("remote_addr", sa.String(64), nullable=True),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    # {"provider", "status", "reason"} computed on the stored bytes under ``signing_rev``.
    sa.Column("signature", sa.JSON, nullable=True),
    sa.Column("signing_rev", sa.Integer, nullable=True),
    # The sender's delivery id (e.g. "github:<X-GitHub-Delivery>"), and the public id of the
    # first request in the same bin that carried it.
    sa.Column("delivery_id", sa.String(255), nullable=True),
    sa.Column("duplicate_of", sa.String(40), nullable=True),
    # The status the capture URL answered with and the id of the response rule that chose it
    # (NULL: the bin's default answer or the standard acknowledgement).
    sa.Column("answer_status", sa.Integer, nullable=True),
    sa.Column("answer_rule", sa.String(64), nullable=True),
    # True when the bin's sender list did not cover the sender and the bin keeps such requests.
    sa.Column("sender_unlisted", sa.Boolean, nullable=True),
    sa.Index("ix_requests_bin_seq", "bin_id", "seq"),
    # Only captures that carry a delivery id are ever looked up by one.
    sa.Index(
        "ix_requests_bin_delivery",
        "bin_id",
        "delivery_id",
        "seq",
        sqlite_where=sa.text("delivery_id IS NOT NULL"),
        postgresql_where=sa.text("delivery_id IS NOT NULL"),
    ),
)

# Bodies live apart from the request rows so that listing a bin never drags megabytes along.
request_bodies = sa.Table(
    "request_bodies",
    metadata,
    sa.Column(
        "request_seq",
        _SEQ,
        sa.ForeignKey("requests.seq", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

attempts = sa.Table(
    "attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "request_seq",
        sa.BigInteger,
        sa.ForeignKey("requests.seq", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("kind", sa.String(16), nullable=False),  # "replay", "forward" or "listen"
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
    # What was sent when it differs from the captured request (edited and/or re-signed replays):
    # the sub-path plus query appended to ``url``, the header list and the body. NULL: as captured.
    sa.Column("request_suffix", sa.Text, nullable=True),
    sa.Column("request_headers", sa.JSON, nullable=True),
    sa.Column("request_body", sa.LargeBinary, nullable=True),
    sa.Column("edited", sa.Boolean, nullable=False, server_default=sa.false()),
    # The signing scheme the replay was signed afresh with, or NULL.
    sa.Column("resigned", sa.String(32), nullable=True),
    # Auto-forward attempts: the queue entry and which try this was (1 = first).
    sa.Column("queue_id", sa.Integer, nullable=True),
    sa.Column("try_no", sa.Integer, nullable=True),
    sa.Index("ix_attempts_request", "request_seq", "id"),
)

# Auto-forward deliveries still owed or already settled. The row is written in the capture's own
# transaction, so an acknowledged request is never lost to a crash before its forward; any process
# may deliver it, one bin's entries strictly in capture order.
forward_queue = sa.Table(
    "forward_queue",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "request_seq",
        sa.BigInteger,
        sa.ForeignKey("requests.seq", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column(
        "bin_id", sa.String(64), sa.ForeignKey("bins.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("url", sa.Text, nullable=False),
    # "pending", "delivered" or "failed" (retries used up).
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("tries", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("next_at", sa.DateTime(timezone=True), nullable=False),
    # A process delivering the entry holds it until ``lease_until``; a crashed one's lease lapses.
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_forward_queue_due", "state", "next_at"),
    sa.Index("ix_forward_queue_bin", "bin_id", "state", "request_seq"),
    sa.Index("ix_forward_queue_request", "request_seq"),
)


# Revocable read-only links to a bin; the key itself is shown once, only its hash is kept.
bin_shares = sa.Table(
    "bin_shares",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column(
        "bin_id", sa.String(64), sa.ForeignKey("bins.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("label", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_bin_shares_bin", "bin_id"),
)

# Hits per limit ("bin", "source", "create"), key and window start, shared by every process.
rate_counters = sa.Table(
    "rate_counters",
    metadata,
    sa.Column("scope", sa.String(16), primary_key=True),
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("window", sa.BigInteger, primary_key=True),
    sa.Column("hits", sa.BigInteger, nullable=False),
)

# Random secrets shared by every process and host of a deployment (e.g. the cookie key).
instance_secrets = sa.Table(
    "instance_secrets",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


def sqlite_file(url: str) -> Path | None:
    """The database file of an SQLite URL; None for in-memory databases and other backends."""
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[-1]
    return Path(path) if path and path != ":memory:" else None


def make_engine(
    url: str,
    *,
    sqlite_synchronous: str = "FULL",
    sqlite_busy_timeout_ms: int = 5000,
    single_connection: bool = False,
    sqlite_autocheckpoint: int | None = None,
) -> Engine:
    """Create the engine for ``url``; SQLite files get WAL, foreign keys and explicit locking.

    ``single_connection`` builds an engine that owns exactly one connection, for a writer that is
    used by one caller at a time (possibly a native thread, where a pool's gevent locks must not
    be taken). ``sqlite_autocheckpoint`` sets SQLite's ``wal_autocheckpoint`` (pages) when given.
    """
    # JSON columns are written through orjson (``app.core.fastjson``: the same values as the
    # standard library writes). Reading stays with the standard library: settings come from
    # users, and orjson would turn a huge integer in them into a float.
    # hide_parameters: a failed statement's error (which gets logged) must not carry the
    # captured headers and bodies it was writing, Authorization headers and secrets included.
    json_codec = {"json_serializer": fastjson.dumps, "hide_parameters": True}
    if not url.startswith("sqlite"):
        return sa.create_engine(
            url, pool_pre_ping=True, pool_size=10, max_overflow=20, **json_codec
        )

    path = sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    pool_args: dict[str, object] = (
        {"poolclass": sa.pool.StaticPool} if single_connection else {"pool_size": 10}
    )
    engine = sa.create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": sqlite_busy_timeout_ms / 1000},
        **pool_args,
        **json_codec,
    )
    synchronous = sqlite_synchronous.upper()
    if synchronous not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
        raise ValueError(
            f"HOOKBIN_SQLITE_SYNCHRONOUS must be OFF/NORMAL/FULL/EXTRA, not {synchronous}"
        )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (see below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(sqlite_busy_timeout_ms)}")
        if sqlite_autocheckpoint is not None:
            cursor.execute(f"PRAGMA wal_autocheckpoint={int(sqlite_autocheckpoint)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
        # Writers take the write lock up front (BEGIN IMMEDIATE): a deferred transaction that reads
        # and then writes can fail with SQLITE_BUSY instead of waiting its turn.
        if conn.get_execution_options().get("sqlite_immediate"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine
