"""The SQL behind ``app.storage.repository.Storage``: bins, captured requests, bodies, attempts.

Plain functions over an engine. Only the storage package calls the writing ones, through the
serialised writer (``Storage`` in ``repository.py``); everything else goes through ``Storage``.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from app.core import fastjson
from app.core.clock import iso, utcnow
from app.storage.captures import REQUEST_COUNTER
from app.storage.db import (
    attempts,
    bins,
    counters,
    forward_queue,
    request_bodies,
    requests,
    rule_hits,
)
from app.storage.ids import new_bin_id, seq_from_id

# --- bins -----------------------------------------------------------------------------------------


def _bin_item(row: sa.Row[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "created_at": iso(row.created_at),
        "forward_url": row.forward_url,
        "auto_forward": bool(row.auto_forward),
        "signing": row.signing,
        "signing_rev": row.signing_rev,
        # What the capture URL answers (app.rules); None: the standard acknowledgement.
        "responses": row.responses,
        # Defined by the HOOKBIN_BINS_FILE file: its settings are rewritten at every start.
        "managed": bool(row.managed),
        # Access (never shown): the API token's digest and the view link's salt.
        "token_hash": row.token_hash,
        "page_key_salt": row.page_key_salt,
        # Overrides of the server's retention and cap (None: the server's; 0: none).
        "retention_seconds": row.retention_seconds,
        "max_requests": row.max_requests,
        # Addresses and ranges that may send (None: everyone), and what befalls the others.
        "senders": row.senders,
        "senders_action": row.senders_action or "refuse",
    }


class BinExists(Exception):
    """A bin with the chosen id (name) exists already."""


def create_bin(
    engine: Engine,
    bin_id: str | None = None,
    *,
    token_hash: str | None = None,
    page_key_salt: str | None = None,
) -> dict[str, Any]:
    """Create an empty bin called ``bin_id`` (default: a random id) and return it.

    Raises BinExists when a chosen id is taken. A random id that is taken (a chosen name may
    happen to spell one) is simply drawn again: the primary key, not the id's shape, decides.
    """
    for _ in range(5):
        new_id = bin_id or new_bin_id()
        values = {
            "id": new_id,
            "created_at": utcnow(),
            "auto_forward": False,
            "token_hash": token_hash,
            "page_key_salt": page_key_salt,
        }
        try:
            with engine.begin() as conn:
                conn.execute(sa.insert(bins).values(**values))
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


_SETTABLE = frozenset(
    {
        "forward_url",
        "auto_forward",
        "signing",
        "responses",
        "retention_seconds",
        "max_requests",
        "token_hash",
        "page_key_salt",
        "senders",
        "senders_action",
    }
)


def list_bins(engine: Engine, *, limit: int, before: str | None = None) -> list[dict[str, Any]]:
    """Up to ``limit`` bins, newest first, optionally made before bin ``before``."""
    query = sa.select(bins).order_by(bins.c.created_at.desc(), bins.c.id.desc()).limit(limit)
    if before is not None:
        cursor = sa.select(bins.c.created_at).where(bins.c.id == before).scalar_subquery()
        query = query.where(
            sa.or_(
                bins.c.created_at < cursor,
                sa.and_(bins.c.created_at == cursor, bins.c.id < before),
            )
        )
    with engine.connect() as conn:
        return [_bin_item(row) for row in conn.execute(query)]


def update_bin(engine: Engine, bin_id: str, **changes: Any) -> dict[str, Any] | None:
    """Set ``forward_url``, ``auto_forward``, ``signing``, ``responses``, ``retention_seconds``,
    ``max_requests``, ``senders``, ``senders_action`` and/or the access columns; returns the bin.

    Changing ``signing`` moves the bin's ``signing_rev`` on, so stored verdicts get re-checked.
    Saving ``responses`` (validated by ``app.rules``) starts the bin's rule counters over.
    """
    allowed: dict[str, Any] = {k: v for k, v in changes.items() if k in _SETTABLE}
    if "signing" in allowed:
        allowed["signing_rev"] = bins.c.signing_rev + 1
    for name in ("responses", "senders"):
        if name in allowed and allowed[name] is None:
            allowed[name] = sa.null()  # SQL NULL, not a JSON "null" document
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
        # True: kept from a sender outside the bin's list; None: the bin had no list.
        "sender_unlisted": row.sender_unlisted,
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
