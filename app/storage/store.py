"""Storage: bins, captured requests, their bodies and replay/forward attempts.

Plain functions over a SQLAlchemy engine, usable without Flask. Items come back as dictionaries in
the shape the JSON API documents, so views only serialise them.
"""

from __future__ import annotations

import collections
import functools
import secrets
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from app.core import fastjson
from app.storage.db import (
    attempts,
    bins,
    counters,
    forward_queue,
    request_bodies,
    requests,
    rule_hits,
)

REQUEST_COUNTER = "requests"
_SEQ_HEX_DIGITS = 12


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def _as_utc(value: datetime) -> datetime:
    # SQLite hands datetimes back without a zone; everything Hookbin stores is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso(value: datetime) -> str:
    """ISO 8601 with a ``Z`` suffix and millisecond precision."""
    return _as_utc(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_bin_id() -> str:
    """A bin id: 128 random bits, URL-safe, 22 characters, never starting with ``-``.

    An id that starts with a dash reads as an option on a command line (``hookbin listen -rX..``
    fails with "No such option"), so such draws are simply drawn again.
    """
    while True:
        bin_id = secrets.token_urlsafe(16)
        if not bin_id.startswith("-"):
            return bin_id


def request_public_id(seq: int) -> str:
    """The public id of request ``seq``: sortable hex sequence plus 80 random bits."""
    return f"{seq:0{_SEQ_HEX_DIGITS}x}{secrets.token_hex(10)}"


def seq_from_id(request_id: str) -> int | None:
    """The sequence number inside a public request id, or None when it is not one of ours."""
    if len(request_id) != _SEQ_HEX_DIGITS + 20:
        return None
    try:
        int(request_id, 16)
    except ValueError:
        return None
    return int(request_id[:_SEQ_HEX_DIGITS], 16)


# --- bins -----------------------------------------------------------------------------------------


def _bin_item(row: sa.Row[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "created_at": iso(row.created_at),
        "forward_url": row.forward_url,
        "auto_forward": bool(row.auto_forward),
        "signing": row.signing,
        "signing_rev": row.signing_rev,
        # What the capture URL answers (app.answers); None: the standard acknowledgement.
        "responses": row.responses,
        # Defined by the HOOKBIN_BINS_FILE file: its settings are rewritten at every start.
        "managed": bool(row.managed),
    }


class BinExists(Exception):
    """A bin with the chosen id (name) exists already."""


def create_bin(engine: Engine, bin_id: str | None = None) -> dict[str, Any]:
    """Create an empty bin called ``bin_id`` (default: a random id) and return it.

    Raises BinExists when a chosen id is taken. A random id that is taken (a chosen name may
    happen to spell one) is simply drawn again: the primary key, not the id's shape, decides.
    """
    for _ in range(5):
        new_id = bin_id or new_bin_id()
        try:
            with engine.begin() as conn:
                conn.execute(
                    sa.insert(bins).values(id=new_id, created_at=utcnow(), auto_forward=False)
                )
                row = conn.execute(sa.select(bins).where(bins.c.id == new_id)).one()
        except sa.exc.IntegrityError:
            if bin_id is not None:
                raise BinExists(bin_id) from None
            continue
        return _bin_item(row)
    raise RuntimeError("could not draw a free bin id")


def get_bin(engine: Engine, bin_id: str) -> dict[str, Any] | None:
    """The bin ``bin_id`` or None."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(bins).where(bins.c.id == bin_id)).first()
    return _bin_item(row) if row else None


def update_bin(engine: Engine, bin_id: str, **changes: Any) -> dict[str, Any] | None:
    """Set ``forward_url``, ``auto_forward``, ``signing`` and/or ``responses``; returns the bin.

    Changing ``signing`` moves the bin's ``signing_rev`` on, so stored verdicts get re-checked.
    Saving ``responses`` (validated by ``app.answers``) starts the bin's rule counters over.
    """
    allowed: dict[str, Any] = {
        k: v
        for k, v in changes.items()
        if k in {"forward_url", "auto_forward", "signing", "responses"}
    }
    if "signing" in allowed:
        allowed["signing_rev"] = bins.c.signing_rev + 1
    if "responses" in allowed and allowed["responses"] is None:
        allowed["responses"] = sa.null()  # SQL NULL, not a JSON "null" document
    with engine.begin() as conn:
        if allowed:
            conn.execute(sa.update(bins).where(bins.c.id == bin_id).values(**allowed))
        if "responses" in allowed:
            conn.execute(sa.delete(rule_hits).where(rule_hits.c.bin_id == bin_id))
        row = conn.execute(sa.select(bins).where(bins.c.id == bin_id)).first()
    return _bin_item(row) if row else None


def delete_bin(engine: Engine, bin_id: str) -> bool:
    """Delete a bin with everything it captured. True when it existed."""
    with engine.begin() as conn:
        _delete_requests(conn, requests.c.bin_id == bin_id)
        conn.execute(sa.delete(rule_hits).where(rule_hits.c.bin_id == bin_id))
        return conn.execute(sa.delete(bins).where(bins.c.id == bin_id)).rowcount > 0


def clear_bin(engine: Engine, bin_id: str) -> int:
    """Delete every request of a bin, keep the bin. Returns how many went."""
    with engine.begin() as conn:
        return _delete_requests(conn, requests.c.bin_id == bin_id)


def _delete_requests(conn: Connection, condition: sa.ColumnElement[bool]) -> int:
    # Explicit child deletes: SQLite only cascades when foreign keys are on for that connection,
    # and a migration tool or a manual shell may not have turned them on.
    seqs = sa.select(requests.c.seq).where(condition).scalar_subquery()
    conn.execute(sa.delete(attempts).where(attempts.c.request_seq.in_(seqs)))
    conn.execute(sa.delete(forward_queue).where(forward_queue.c.request_seq.in_(seqs)))
    conn.execute(sa.delete(request_bodies).where(request_bodies.c.request_seq.in_(seqs)))
    return conn.execute(sa.delete(requests).where(condition)).rowcount


# --- captures -------------------------------------------------------------------------------------


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
    #: The sender's delivery id, if it gives one (see ``app.deliveries``).
    delivery_id: str | None = None
    #: The status the capture URL answers with, and the response rule that chose it.
    answer_status: int | None = None
    answer_rule: str | None = None
    #: Auto-forward target: a forward queue entry is written in the capture's own transaction.
    forward_url: str | None = None


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
    ``app.writelock``); everything that can be prepared without it is done first. ``then`` is
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
        body_params += (seq, c.body)
        if c.forward_url:
            now = sql.received_at(c.received_at)
            queue_params.append((seq, c.bin_id, c.forward_url, "pending", 0, now, now))
    for start in range(0, len(keep), _ROWS_PER_STATEMENT):
        rows = min(_ROWS_PER_STATEMENT, len(keep) - start)
        cursor.execute(
            sql.insert_requests(rows),
            request_params[start * _REQUEST_WIDTH : (start + rows) * _REQUEST_WIDTH],
        )
        cursor.execute(sql.insert_bodies(rows), body_params[start * 2 : (start + rows) * 2])
    if queue_params:
        # Forwarding bins are the exception, so one statement per row costs little here.
        cursor.executemany(sql.insert_forward, queue_params)
    if notify_sql:
        for bin_id in sorted({batch[i].bin_id for i in keep}):
            cursor.execute(notify_sql, (bin_id,))
    return out


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
    "delivery_id, duplicate_of"
)
_REQUEST_WIDTH = 18
# Keeps a statement's parameters (18 per row) far below SQLite's limit of 32,766.
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
        values = ", ".join([f"({self._marks(2)})"] * rows)
        return f"INSERT INTO request_bodies (request_seq, data) VALUES {values}"  # noqa: S608

    def _marks(self, count: int) -> str:
        return ", ".join([self.mark] * count)


_SQL_BY_DIALECT: dict[str, _CaptureSQL] = {}


def _capture_sql(dialect: sa.Dialect) -> _CaptureSQL:
    made = _SQL_BY_DIALECT.get(dialect.name)
    if made is None:
        made = _SQL_BY_DIALECT[dialect.name] = _CaptureSQL(dialect)
    return made


# --- reading requests -----------------------------------------------------------------------------

_LIST_COLUMNS = [c for c in requests.c]


def _request_item(row: sa.Row[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "seq": row.seq,
        "bin_id": row.bin_id,
        "method": row.method,
        "path": row.path,
        "query_string": row.query_string,
        "headers": [list(h) for h in row.headers],
        "header_source": row.header_source,
        "content_type": row.content_type,
        "body_size": row.body_size,
        "remote_addr": row.remote_addr,
        "received_at": iso(row.received_at),
        "signature": row.signature,
        "signing_rev": row.signing_rev,
        "delivery_id": row.delivery_id,
        "duplicate_of": row.duplicate_of,
        # What the capture URL answered (NULL status: stored before answers were recorded).
        "answer": (
            None
            if row.answer_status is None
            else {"status": row.answer_status, "rule": row.answer_rule}
        ),
    }


def save_verdict(engine: Engine, seq: int, verdict: dict[str, Any], signing_rev: int) -> None:
    """Store a re-checked signature verdict."""
    query = (
        sa.update(requests)
        .where(requests.c.seq == seq)
        .values(signature=verdict, signing_rev=signing_rev)
    )
    with engine.begin() as conn:
        conn.execute(query)


def list_requests(
    engine: Engine, bin_id: str, *, limit: int, before_seq: int | None = None
) -> list[dict[str, Any]]:
    """Up to ``limit`` requests of a bin, newest first, optionally older than ``before_seq``."""
    query = sa.select(*_LIST_COLUMNS).where(requests.c.bin_id == bin_id)
    if before_seq is not None:
        query = query.where(requests.c.seq < before_seq)
    query = query.order_by(requests.c.seq.desc()).limit(limit)
    with engine.connect() as conn:
        return [_request_item(r) for r in conn.execute(query)]


def requests_after(
    engine: Engine, bin_id: str, after_seq: int, *, limit: int = 500
) -> list[dict[str, Any]]:
    """Requests of a bin with a sequence above ``after_seq``, oldest first.

    The live hub runs this on the event loop after every commit of every process, so it is plain
    DB-API with the column types' own converters: SQLAlchemy's statement and row machinery cost
    several times the query itself here.
    """
    reader = _item_reader(engine.dialect)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        try:
            cursor.execute(reader.sql, (bin_id, after_seq, limit))
            rows = cursor.fetchall()
        finally:
            cursor.close()
        raw.commit()  # ends the read transaction the driver may have opened
    finally:
        raw.close()
    return [_request_item(reader.row(row)) for row in rows]


class _ItemReader:
    """``requests_after``'s statement in one dialect's parameter style, and its row converter."""

    def __init__(self, dialect: sa.Dialect) -> None:
        m = "?" if dialect.paramstyle == "qmark" else "%s"
        names = [c.name for c in requests.c]
        self.sql = (
            f"SELECT {', '.join(names)} FROM requests "  # noqa: S608 - fixed names only
            f"WHERE bin_id = {m} AND seq > {m} ORDER BY seq LIMIT {m}"
        )
        self._tuple = collections.namedtuple("_RequestRow", names)  # type: ignore[misc]
        self._convert = [
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in requests.c
        ]
        # The header list and the verdict are JSON that Hookbin wrote (strings and null only):
        # safe for orjson, which reads them several times faster. Drivers that parse JSON
        # themselves (psycopg) leave no converter to replace.
        for i, c in enumerate(requests.c):
            if c.name in ("headers", "signature") and self._convert[i] is not None:
                self._convert[i] = fastjson.loads

    def row(self, values: Sequence[Any]) -> Any:
        """A row with attribute access, each value converted as SQLAlchemy would."""
        return self._tuple._make(
            v if f is None or v is None else f(v)
            for f, v in zip(self._convert, values, strict=True)
        )


@functools.lru_cache(maxsize=8)
def _item_reader(dialect: sa.Dialect) -> _ItemReader:
    return _ItemReader(dialect)


def last_seq(engine: Engine, bin_id: str) -> int:
    """The newest sequence number in a bin (0 when empty)."""
    query = sa.select(sa.func.max(requests.c.seq)).where(requests.c.bin_id == bin_id)
    with engine.connect() as conn:
        return conn.execute(query).scalar() or 0


def high_water(engine: Engine) -> int:
    """The highest request sequence handed out so far, in any bin."""
    query = sa.select(counters.c.value).where(counters.c.name == REQUEST_COUNTER)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar() or 0)


def bins_changed_since(engine: Engine, after_seq: int) -> dict[str, int]:
    """Every bin holding a request above ``after_seq``, with its highest sequence.

    One range scan over the newest rows, however many bins are watched: this is the live hub's
    safety-net poll.
    """
    query = (
        sa.select(requests.c.bin_id, sa.func.max(requests.c.seq))
        .where(requests.c.seq > after_seq)
        .group_by(requests.c.bin_id)
    )
    with engine.connect() as conn:
        return {bin_id: int(top) for bin_id, top in conn.execute(query)}


def count_requests(engine: Engine, bin_id: str) -> int:
    """How many requests a bin holds."""
    query = sa.select(sa.func.count()).select_from(requests).where(requests.c.bin_id == bin_id)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar() or 0)


def get_request(engine: Engine, request_id: str) -> dict[str, Any] | None:
    """One request by public id, or None."""
    seq = seq_from_id(request_id)
    if seq is None:
        return None
    query = sa.select(*_LIST_COLUMNS).where(requests.c.seq == seq, requests.c.id == request_id)
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return _request_item(row) if row else None


def get_body(engine: Engine, seq: int) -> bytes:
    """The exact bytes captured for request ``seq``."""
    query = sa.select(request_bodies.c.data).where(request_bodies.c.request_seq == seq)
    with engine.connect() as conn:
        data = conn.execute(query).scalar()
    return bytes(data) if data is not None else b""


def delete_request(engine: Engine, request_id: str) -> bool:
    """Delete one request. True when it existed."""
    seq = seq_from_id(request_id)
    if seq is None:
        return False
    with engine.begin() as conn:
        return _delete_requests(conn, (requests.c.seq == seq) & (requests.c.id == request_id)) > 0


# --- attempts -------------------------------------------------------------------------------------


def add_attempt(engine: Engine, request_seq: int, kind: str, **fields: Any) -> dict[str, Any]:
    """Store one replay/forward attempt and return it."""
    values = {"request_seq": request_seq, "kind": kind, **fields}
    values["response_headers"] = [list(h) for h in values.get("response_headers", [])]
    with engine.begin() as conn:
        new_id = conn.execute(sa.insert(attempts).values(**values)).inserted_primary_key[0]
        row = conn.execute(sa.select(attempts).where(attempts.c.id == new_id)).one()
    return _attempt_item(row)


def _attempt_item(row: sa.Row[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "method": row.method,
        "url": row.url,
        "started_at": iso(row.started_at),
        "status": row.status,
        "headers": [list(h) for h in row.response_headers],
        "body": bytes(row.response_body),
        "body_size": row.response_size,
        "truncated": bool(row.truncated),
        "elapsed_ms": round(row.elapsed_ms, 1),
        "error": row.error,
        # Auto-forwards: which try of the forward this was (1 = first), else None.
        "try_no": row.try_no,
        # Edited and/or re-signed replays: what was sent, when it differs from the capture.
        "edited": bool(row.edited),
        "resigned": row.resigned,
        "sent": (
            None
            if row.request_headers is None
            else {
                "suffix": row.request_suffix or "/",
                "headers": [list(h) for h in row.request_headers],
                "body": bytes(row.request_body or b""),
            }
        ),
    }


def list_attempts(engine: Engine, request_seq: int) -> list[dict[str, Any]]:
    """Every attempt for a request, newest first."""
    query = (
        sa.select(attempts)
        .where(attempts.c.request_seq == request_seq)
        .order_by(attempts.c.id.desc())
    )
    with engine.connect() as conn:
        return [_attempt_item(r) for r in conn.execute(query)]


def get_attempt(engine: Engine, request_seq: int, attempt_id: int) -> dict[str, Any] | None:
    """One attempt of request ``request_seq`` by id, or None."""
    query = sa.select(attempts).where(
        attempts.c.id == attempt_id, attempts.c.request_seq == request_seq
    )
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return _attempt_item(row) if row else None


def ping(engine: Engine) -> None:
    """Raise when the database does not answer a trivial query."""
    with engine.connect() as conn:
        conn.execute(sa.select(sa.func.count()).select_from(counters))
