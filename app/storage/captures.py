"""The capture hot path: store a batch of captured requests in one transaction.

Called only by the group-commit batcher (``app.storage.batcher``), which the wiring gives the
writer's own connection; nothing else writes requests.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from app.core import fastjson
from app.storage.db import requests
from app.storage.ids import request_public_id

REQUEST_COUNTER = "requests"


@dataclass(slots=True)
class Capture:
    """One request as it arrived on a capture URL, before it is stored."""

    bin_id: str
    method: str
    path: str
    query_string: str
    headers: list[tuple[str, str]]
    header_source: str
    content_type: str | None
    body: bytes
    remote_addr: str | None
    received_at: datetime
    #: Signature verdict computed at capture, under the bin's ``signing_rev``.
    signature: dict[str, Any] | None = None
    signing_rev: int | None = None
    #: The sender's delivery id, if it gives one (see ``app.capture.delivery_ids``).
    delivery_id: str | None = None
    #: The status the capture URL answers with, and the response rule that chose it.
    answer_status: int | None = None
    answer_rule: str | None = None
    #: Auto-forward target: a forward queue entry is written in the capture's own transaction.
    forward_url: str | None = None
    #: The bin's sender list left the sender out (None: the bin has no list).
    sender_unlisted: bool | None = None


@dataclass(slots=True)
class Stored:
    """Where a capture landed."""

    seq: int
    id: str


def insert_captures(
    engine: Engine,
    batch: Sequence[Capture],
    *,
    notify_sql: str | None = None,
    write_lock: AbstractContextManager[Any] | None = None,
    then: Callable[[Any], None] | None = None,
) -> list[Stored | None]:
    """Store a batch of captures in ONE transaction; None marks a capture whose bin is gone.

    Sequence numbers are taken from the counter row inside the transaction, which serialises
    writers, so sequences become visible in order. ``notify_sql`` (PostgreSQL) is executed once
    per distinct bin inside the same transaction, so the notification is sent if and only if the
    rows are committed. ``write_lock`` is held around the transaction only (see
    ``writelock``); everything that can be prepared without it is done first. ``then`` is
    called with the DB-API cursor after the commit, still under the write lock.
    """
    sql = _capture_sql(engine.dialect)
    prepared = [_prepare(c, sql) for c in batch]
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        try:
            with write_lock or nullcontext():
                try:
                    if sql.begin:
                        cursor.execute(sql.begin)
                    out = _insert_batch(cursor, sql, batch, prepared, notify_sql)
                    raw.commit()
                except BaseException:
                    raw.rollback()
                    raise
                if then is not None:
                    then(cursor)
        finally:
            cursor.close()
    finally:
        raw.close()  # back to the pool
    return out


def _prepare(c: Capture, sql: _CaptureSQL) -> tuple[Any, ...]:
    # The request row minus its sequence and id, which only the transaction can hand out.
    return (
        c.bin_id,
        c.method,
        c.path,
        c.query_string,
        # JSON text, as SQLAlchemy's JSON type writes it; PostgreSQL casts it to json.
        fastjson.dumps([list(h) for h in c.headers]),
        c.header_source,
        c.content_type,
        len(c.body),
        c.remote_addr,
        sql.received_at(c.received_at),
        None if c.signature is None else fastjson.dumps(c.signature),
        c.signing_rev,
        c.answer_status,
        c.answer_rule,
        c.delivery_id,
        c.sender_unlisted,
    )


def _insert_batch(
    cursor: Any,
    sql: _CaptureSQL,
    batch: Sequence[Capture],
    prepared: list[tuple[Any, ...]],
    notify_sql: str | None,
) -> list[Stored | None]:
    # Plain DB-API calls, and one multi-row INSERT per table rather than executemany: this runs
    # on the event loop of a busy worker, so the number of calls, not the rows, sets the cost
    # (SQLAlchemy's per-statement machinery cost several times the SQL itself).
    out: list[Stored | None] = [None] * len(batch)
    bin_ids = sorted({c.bin_id for c in batch})
    cursor.execute(sql.find_bins(len(bin_ids)), tuple(bin_ids))
    live = {row[0] for row in cursor.fetchall()}
    keep = [i for i, c in enumerate(batch) if c.bin_id in live]
    if not keep:
        return out
    cursor.execute(sql.bump, (len(keep), REQUEST_COUNTER))
    first = cursor.fetchone()[0] - len(keep) + 1
    originals = _first_deliveries(cursor, sql, [batch[i] for i in keep])
    request_params: list[Any] = []
    body_params: list[Any] = []
    queue_params: list[Any] = []
    streamed: list[tuple[int, bytes]] = []
    for offset, i in enumerate(keep):
        seq = first + offset
        stored = out[i] = Stored(seq, request_public_id(seq))
        c = batch[i]
        duplicate_of = None
        if c.delivery_id:
            key = (c.bin_id, c.delivery_id)
            duplicate_of = originals.get(key)
            if duplicate_of is None:
                originals[key] = stored.id  # later ones in this batch repeat this one
        request_params += (seq, stored.id, *prepared[i], duplicate_of)
        if sql.blob_stream and len(c.body) > _BODY_INLINE_MAX:
            body_params += (seq, None, len(c.body))  # room for it, filled in below
            streamed.append((seq, c.body))
        else:
            body_params += (seq, c.body, 0) if sql.blob_stream else (seq, c.body)
        if c.forward_url:
            now = sql.received_at(c.received_at)
            queue_params.append((seq, c.bin_id, c.forward_url, "pending", 0, now, now))
    for start in range(0, len(keep), _ROWS_PER_STATEMENT):
        rows = min(_ROWS_PER_STATEMENT, len(keep) - start)
        cursor.execute(
            sql.insert_requests(rows),
            request_params[start * _REQUEST_WIDTH : (start + rows) * _REQUEST_WIDTH],
        )
        width = sql.body_width
        cursor.execute(sql.insert_bodies(rows), body_params[start * width : (start + rows) * width])
    for seq, body in streamed:
        _write_blob(cursor.connection, seq, body)
    if queue_params:
        # Forwarding bins are the exception, so one statement per row costs little here.
        cursor.executemany(sql.insert_forward, queue_params)
    if notify_sql:
        for bin_id in sorted({batch[i].bin_id for i in keep}):
            cursor.execute(notify_sql, (bin_id,))
    return out


def _write_blob(conn: Any, seq: int, body: bytes) -> None:
    """Copy a large body into the zero-filled blob of row ``seq`` (SQLite), a slice at a time.

    A body bound as a statement parameter is copied by SQLite and that copy stays with the
    cached statement until its next use: large bodies held that way added up to hundreds of
    MiB per worker. Written through a blob handle, nothing outlives the call.
    """
    view = memoryview(body)
    with conn.blobopen("request_bodies", "data", seq) as blob:
        for at in range(0, len(view), _BLOB_SLICE):
            blob.write(view[at : at + _BLOB_SLICE])


def _first_deliveries(
    cursor: Any, sql: _CaptureSQL, captures: list[Capture]
) -> dict[tuple[str, str], str]:
    """(bin, delivery id) -> public id of the first stored request that carried it."""
    wanted = {(c.bin_id, c.delivery_id) for c in captures if c.delivery_id}
    if not wanted:
        return {}
    bin_ids = sorted({b for b, _ in wanted})
    keys = sorted({d for _, d in wanted})
    cursor.execute(sql.first_deliveries(len(bin_ids), len(keys)), (*bin_ids, *keys))
    # The statement asks for every bin x every id; only the pairs asked for count.
    return {(b, d): rid for b, d, rid in cursor.fetchall() if (b, d) in wanted}


_REQUEST_COLUMNS = (
    "seq, id, bin_id, method, path, query_string, headers, header_source, content_type, "
    "body_size, remote_addr, received_at, signature, signing_rev, answer_status, answer_rule, "
    "delivery_id, sender_unlisted, duplicate_of"
)
_REQUEST_WIDTH = 19
#: Largest body bound as a statement parameter on SQLite; larger ones go through a blob handle.
_BODY_INLINE_MAX = 64 * 1024
_BLOB_SLICE = 1024 * 1024
# Keeps a statement's parameters (19 per row) far below SQLite's limit of 32,766.
_ROWS_PER_STATEMENT = 500


class _CaptureSQL:
    """The capture path's statements in one dialect's parameter style, with its value converter.

    Only placeholders and fixed names are ever put into these strings; every value is a parameter.
    """

    def __init__(self, dialect: sa.Dialect) -> None:
        self.mark = "?" if dialect.paramstyle == "qmark" else "%s"
        # Our SQLite connections run in autocommit mode (see ``db.make_engine``); the write lock
        # is taken up front so that the counter bump cannot fail with SQLITE_BUSY halfway.
        self.begin = "BEGIN IMMEDIATE" if dialect.name == "sqlite" else None
        # SQLite: a large body is inserted as zeros of its size and written through a blob
        # handle (``_write_blob``), so each body row takes (seq, body or NULL, size).
        self.blob_stream = dialect.name == "sqlite"
        self.body_width = 3 if self.blob_stream else 2
        m = self.mark
        self.bump = f"UPDATE counters SET value = value + {m} WHERE name = {m} RETURNING value"  # noqa: S608
        self.insert_forward = (
            "INSERT INTO forward_queue "  # noqa: S608
            "(request_seq, bin_id, url, state, tries, next_at, created_at) "
            f"VALUES ({m}, {m}, {m}, {m}, {m}, {m}, {m})"
        )
        # The column type's own converter, so times read back exactly as SQLAlchemy writes them.
        to_db = requests.c.received_at.type.bind_processor(dialect)
        self.received_at: Callable[[Any], Any] = to_db or (lambda value: value)

    @functools.lru_cache(maxsize=1024)  # noqa: B019 - one instance per dialect, kept for good
    def find_bins(self, count: int) -> str:
        """SELECT the existing ones among ``count`` bin ids."""
        return f"SELECT id FROM bins WHERE id IN ({self._marks(count)})"  # noqa: S608

    @functools.lru_cache(maxsize=1024)  # noqa: B019
    def first_deliveries(self, bins: int, ids: int) -> str:
        """The first request of each (bin, delivery id) among ``bins`` bins and ``ids`` ids.

        Both columns are constrained so that the lookup is an index search on
        ``ix_requests_bin_delivery``; on the delivery id alone it was a scan of the index.
        """
        return (
            "SELECT r.bin_id, r.delivery_id, r.id FROM requests r JOIN ("  # noqa: S608
            "SELECT bin_id, delivery_id, MIN(seq) AS first_seq FROM requests "
            f"WHERE bin_id IN ({self._marks(bins)}) AND delivery_id IN ({self._marks(ids)}) "
            "GROUP BY bin_id, delivery_id"
            ") f ON r.seq = f.first_seq"
        )

    @functools.lru_cache(maxsize=1024)  # noqa: B019
    def insert_requests(self, rows: int) -> str:
        """INSERT ``rows`` request rows in one statement."""
        values = ", ".join([f"({self._marks(_REQUEST_WIDTH)})"] * rows)
        return f"INSERT INTO requests ({_REQUEST_COLUMNS}) VALUES {values}"  # noqa: S608

    @functools.lru_cache(maxsize=1024)  # noqa: B019
    def insert_bodies(self, rows: int) -> str:
        """INSERT ``rows`` bodies in one statement."""
        m = self.mark
        row = f"({m}, coalesce({m}, zeroblob({m})))" if self.blob_stream else f"({m}, {m})"
        values = ", ".join([row] * rows)
        return f"INSERT INTO request_bodies (request_seq, data) VALUES {values}"  # noqa: S608

    def _marks(self, count: int) -> str:
        return ", ".join([self.mark] * count)


_SQL_BY_DIALECT: dict[str, _CaptureSQL] = {}


def _capture_sql(dialect: sa.Dialect) -> _CaptureSQL:
    made = _SQL_BY_DIALECT.get(dialect.name)
    if made is None:
        made = _SQL_BY_DIALECT[dialect.name] = _CaptureSQL(dialect)
    return made
