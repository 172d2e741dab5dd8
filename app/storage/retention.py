"""Retention and caps in SQL: which captured requests have outlived their bin's limits, and
deleting them about a hundred at a time.

A bin keeps its requests for ``retention_seconds`` and at most its newest ``max_requests``; a bin
that sets neither (NULL) follows the server's settings, and 0 means "no limit". The writing
functions here are short transactions for ``Storage.write``; each deletes at most ``BATCH``
requests with their bodies, attempts and forward-queue entries, and deleting a row that is
already gone is no error, so two purgers running at once only waste a little work. The loop that
calls them is ``app.storage.purge``.

No index on ``received_at``: request sequences follow arrival order closely, so the oldest rows
are the lowest sequences (the row id on SQLite), and walking up from the lowest one finds the
expired rows without costing every capture insert another index.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from app.core.clock import as_utc
from app.storage.db import bins, requests
from app.storage.store import _delete_requests
from app.storage.writes import write_transaction

#: Requests deleted (or sequences looked at) per transaction: each one holds the write lock for
#: a few milliseconds, so captures queued behind it wait no longer than that.
BATCH = 100


def effective(override: int | None, default: int) -> int:
    """A bin's limit: its own setting, or the server's when it has none (None). 0: no limit."""
    return default if override is None else override


@dataclass(frozen=True)
class Limits:
    """A bin that sets its own retention and/or cap, and the arrival of its oldest request."""

    retention_seconds: int | None
    max_requests: int | None
    oldest: datetime | None


def bins_with_limits(engine: Engine) -> dict[str, Limits]:
    """Every bin that overrides the server's retention or cap (the partial ``ix_bins_limits``)."""
    oldest = (
        sa.select(requests.c.received_at)
        .where(requests.c.bin_id == bins.c.id)
        .order_by(requests.c.seq)
        .limit(1)
        .scalar_subquery()
    )
    query = sa.select(bins.c.id, bins.c.retention_seconds, bins.c.max_requests, oldest).where(
        sa.or_(bins.c.retention_seconds.is_not(None), bins.c.max_requests.is_not(None))
    )
    with engine.connect() as conn:
        return {
            row[0]: Limits(row[1], row[2], None if row[3] is None else as_utc(row[3]))
            for row in conn.execute(query)
        }


def seq_spans(engine: Engine, bin_ids: Collection[str]) -> dict[str, tuple[int, int]]:
    """The lowest and highest sequence of each of ``bin_ids`` that holds requests.

    Two index seeks per bin. A bin whose span is no wider than its cap cannot be over it, so
    only the others need counting.
    """
    if not bin_ids:
        return {}
    low = sa.select(sa.func.min(requests.c.seq)).where(requests.c.bin_id == bins.c.id)
    high = sa.select(sa.func.max(requests.c.seq)).where(requests.c.bin_id == bins.c.id)
    query = sa.select(bins.c.id, low.scalar_subquery(), high.scalar_subquery()).where(
        bins.c.id.in_(list(bin_ids))
    )
    with engine.connect() as conn:
        return {row[0]: (row[1], row[2]) for row in conn.execute(query) if row[1] is not None}


def bins_after(engine: Engine, after: str, limit: int) -> list[str]:
    """Up to ``limit`` bin ids above ``after``, in order (the purge's sweep over every bin)."""
    query = sa.select(bins.c.id).where(bins.c.id > after).order_by(bins.c.id).limit(limit)
    with engine.connect() as conn:
        return list(conn.execute(query).scalars())


def _delete(conn: sa.Connection, seqs: list[int]) -> int:
    return _delete_requests(conn, requests.c.seq.in_(seqs)) if seqs else 0


@dataclass(frozen=True)
class Window:
    """What one step of the retention walk did."""

    deleted: int
    #: Where the next step starts; None when this one reached requests too new to go (or the
    #: end), so the walk stops there for now and resumes from ``start`` next time.
    next_start: int | None
    #: The lowest sequence the step looked at (where the walk resumes).
    start: int


def expire_window(
    engine: Engine, start: int, cutoff: datetime, skip_bins: Collection[str]
) -> Window:
    """Delete requests received before ``cutoff`` among the next ``BATCH`` sequences from
    ``start``, except those of ``skip_bins`` (bins with a retention of their own)."""
    old = (requests.c.received_at < cutoff).label("old")
    with write_transaction(engine) as conn:
        low = conn.execute(
            sa.select(sa.func.min(requests.c.seq)).where(requests.c.seq >= start)
        ).scalar()
        if low is None:
            return Window(0, None, start)
        rows = conn.execute(
            sa.select(requests.c.seq, requests.c.bin_id, old).where(
                requests.c.seq >= low, requests.c.seq < low + BATCH
            )
        ).all()
        victims = [seq for seq, bin_id, is_old in rows if is_old and bin_id not in skip_bins]
        reached_new = any(not is_old and bin_id not in skip_bins for _, bin_id, is_old in rows)
        deleted = _delete(conn, victims)
    return Window(deleted, None if reached_new else low + BATCH, low)


def expire_bin(engine: Engine, bin_id: str, cutoff: datetime) -> int:
    """Delete up to ``BATCH`` of a bin's oldest requests received before ``cutoff``."""
    query = (
        sa.select(requests.c.seq, (requests.c.received_at < cutoff).label("old"))
        .where(requests.c.bin_id == bin_id)
        .order_by(requests.c.seq)
        .limit(BATCH)
    )
    with write_transaction(engine) as conn:
        return _delete(conn, [seq for seq, is_old in conn.execute(query) if is_old])


def cap_cut(engine: Engine, bin_id: str, cap: int) -> int | None:
    """The sequence of the newest request of a bin beyond its ``cap`` newest, or None.

    That request and every older one go. New captures only add higher sequences, so the cut
    stays right while they arrive.
    """
    query = (
        sa.select(requests.c.seq)
        .where(requests.c.bin_id == bin_id)
        .order_by(requests.c.seq.desc())
        .limit(1)
        .offset(cap)
    )
    with engine.connect() as conn:
        return conn.execute(query).scalar()


def trim_bin(engine: Engine, bin_id: str, cut: int) -> int:
    """Delete up to ``BATCH`` of a bin's requests at or below sequence ``cut``, oldest first."""
    query = (
        sa.select(requests.c.seq)
        .where(requests.c.bin_id == bin_id, requests.c.seq <= cut)
        .order_by(requests.c.seq)
        .limit(BATCH)
    )
    with write_transaction(engine) as conn:
        return _delete(conn, list(conn.execute(query).scalars()))


def over_cap(
    spans: dict[str, tuple[int, int]], caps: Iterable[tuple[str, int]]
) -> list[tuple[str, int]]:
    """The ``(bin, cap)`` pairs whose span of sequences is wider than the cap (0: no cap)."""
    out = []
    for bin_id, cap in caps:
        span = spans.get(bin_id)
        if cap > 0 and span is not None and span[1] - span[0] + 1 > cap:
            out.append((bin_id, cap))
    return out
