"""Storage: bins, captured requests, their bodies and replay/forward attempts.

Plain functions over a SQLAlchemy engine, usable without Flask. Items come back as dictionaries in
the shape the JSON API documents, so views only serialise them.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from app.db import attempts, bins, counters, request_bodies, requests

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
    """A bin id: 128 random bits, URL-safe, 22 characters."""
    return secrets.token_urlsafe(16)


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
    }


def create_bin(engine: Engine) -> dict[str, Any]:
    """Create an empty bin and return it."""
    bin_id = new_bin_id()
    with engine.begin() as conn:
        conn.execute(sa.insert(bins).values(id=bin_id, created_at=utcnow(), auto_forward=False))
        row = conn.execute(sa.select(bins).where(bins.c.id == bin_id)).one()
    return _bin_item(row)


def get_bin(engine: Engine, bin_id: str) -> dict[str, Any] | None:
    """The bin ``bin_id`` or None."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(bins).where(bins.c.id == bin_id)).first()
    return _bin_item(row) if row else None


def update_bin(engine: Engine, bin_id: str, **changes: Any) -> dict[str, Any] | None:
    """Set ``forward_url`` and/or ``auto_forward`` on a bin; returns the bin or None."""
    allowed = {k: v for k, v in changes.items() if k in {"forward_url", "auto_forward"}}
    with engine.begin() as conn:
        if allowed:
            conn.execute(sa.update(bins).where(bins.c.id == bin_id).values(**allowed))
        row = conn.execute(sa.select(bins).where(bins.c.id == bin_id)).first()
    return _bin_item(row) if row else None


def delete_bin(engine: Engine, bin_id: str) -> bool:
    """Delete a bin with everything it captured. True when it existed."""
    with engine.begin() as conn:
        _delete_requests(conn, requests.c.bin_id == bin_id)
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


@dataclass(slots=True)
class Stored:
    """Where a capture landed."""

    seq: int
    id: str


def insert_captures(
    engine: Engine, batch: Sequence[Capture], *, notify_sql: str | None = None
) -> list[Stored | None]:
    """Store a batch of captures in ONE transaction; None marks a capture whose bin is gone.

    Sequence numbers are taken from the counter row inside the transaction, which serialises
    writers, so sequences become visible in order. ``notify_sql`` (PostgreSQL) is executed once
    per distinct bin inside the same transaction, so the notification is sent if and only if the
    rows are committed.
    """
    bin_ids = {c.bin_id for c in batch}
    out: list[Stored | None] = [None] * len(batch)
    with engine.connect().execution_options(sqlite_immediate=True) as conn, conn.begin():
        live = set(conn.execute(sa.select(bins.c.id).where(bins.c.id.in_(bin_ids))).scalars())
        keep = [i for i, c in enumerate(batch) if c.bin_id in live]
        if not keep:
            return out
        top = conn.execute(
            sa.update(counters)
            .where(counters.c.name == REQUEST_COUNTER)
            .values(value=counters.c.value + len(keep))
            .returning(counters.c.value)
        ).scalar_one()
        first = top - len(keep) + 1
        for offset, i in enumerate(keep):
            out[i] = Stored(first + offset, request_public_id(first + offset))
        conn.execute(
            sa.insert(requests),
            [_request_row(batch[i], out[i]) for i in keep],  # type: ignore[arg-type]
        )
        conn.execute(
            sa.insert(request_bodies),
            [{"request_seq": out[i].seq, "data": batch[i].body} for i in keep],  # type: ignore[union-attr]
        )
        if notify_sql:
            for bin_id in sorted({batch[i].bin_id for i in keep}):
                conn.exec_driver_sql(notify_sql, (bin_id,))
    return out


def _request_row(c: Capture, where: Stored) -> dict[str, Any]:
    return {
        "seq": where.seq,
        "id": where.id,
        "bin_id": c.bin_id,
        "method": c.method,
        "path": c.path,
        "query_string": c.query_string,
        "headers": [list(h) for h in c.headers],
        "header_source": c.header_source,
        "content_type": c.content_type,
        "body_size": len(c.body),
        "remote_addr": c.remote_addr,
        "received_at": c.received_at,
    }


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
    }


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
    """Requests of a bin with a sequence above ``after_seq``, oldest first."""
    query = (
        sa.select(*_LIST_COLUMNS)
        .where(requests.c.bin_id == bin_id, requests.c.seq > after_seq)
        .order_by(requests.c.seq)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [_request_item(r) for r in conn.execute(query)]


def last_seq(engine: Engine, bin_id: str) -> int:
    """The newest sequence number in a bin (0 when empty)."""
    query = sa.select(sa.func.max(requests.c.seq)).where(requests.c.bin_id == bin_id)
    with engine.connect() as conn:
        return conn.execute(query).scalar() or 0


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


def ping(engine: Engine) -> None:
    """Raise when the database does not answer a trivial query."""
    with engine.connect() as conn:
        conn.execute(sa.select(sa.func.count()).select_from(counters))
