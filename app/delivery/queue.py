"""The auto-forward delivery queue: plain functions over the ``forward_queue`` table.

An entry is written by ``captures.insert_captures`` in the capture's own transaction, so a request
that was acknowledged is never lost to a crash before it is forwarded. Any process sharing the
database may then deliver it:

* ``claim_due`` leases the entries that may be tried now, with a compare-and-set UPDATE whose
  row count says whether this process won (SQLite and PostgreSQL alike). A process that dies
  mid-try leaves a lease that lapses, and then another process tries again.
* ``settle`` records the outcome of a try: delivered (the target answered 2xx), a retry after the
  next delay of the schedule, or failed for good (retries used up, or the target refused by
  policy, which no retry can change).
* ``retry_now`` lets a user skip the wait, or re-open an entry that was given up on.
* ``state_of`` and ``describe`` read an entry back for the API and the page.

Order is "head of line" per bin: only the oldest pending entry of a bin may be tried, and later
ones wait behind it, also while it backs off. A receiver therefore sees a bin's requests in
capture order, at the price of one dead request holding up the ones after it until it is
delivered or given up on. Bins are independent of each other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from app.core.clock import iso, utcnow
from app.storage.db import forward_queue, requests
from app.storage.writes import write_transaction

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"

_q = forward_queue


@dataclass(frozen=True, slots=True)
class Entry:
    """A claimed queue entry: what the delivering process needs to make one try."""

    id: int
    request_seq: int
    request_id: str
    bin_id: str
    url: str
    #: Tries made before this one (the try being made is ``tries + 1``).
    tries: int
    lease_owner: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What ``settle`` made of a try."""

    state: str
    tries: int
    #: Seconds until the next try, when one is scheduled.
    retry_in: float | None


def is_success(status: int | None) -> bool:
    """A forward is delivered when the target answered with a 2xx status."""
    return status is not None and 200 <= status < 300


def _heads_query(now: datetime, limit: int) -> sa.Select[Any]:
    """Ids of the entries that may be tried at ``now``, the longest-due first.

    An entry qualifies when it is pending and due, it is the oldest pending entry of its bin, and
    no pending entry of its bin is leased (in flight) right now.
    """
    e = _q.alias("e")
    heads = (
        sa.select(e.c.bin_id, sa.func.min(e.c.request_seq).label("head"))
        .where(e.c.state == PENDING)
        .group_by(e.c.bin_id)
        .subquery("h")
    )
    busy = _q.alias("b")
    in_flight = sa.select(busy.c.bin_id).where(busy.c.state == PENDING, busy.c.lease_until >= now)
    return (
        sa.select(_q.c.id)
        .join(heads, sa.and_(_q.c.bin_id == heads.c.bin_id, _q.c.request_seq == heads.c.head))
        .where(_q.c.state == PENDING, _q.c.next_at <= now, _q.c.bin_id.not_in(in_flight))
        .order_by(_q.c.next_at, _q.c.id)
        .limit(limit)
    )


def due_heads(engine: Engine, *, now: datetime | None = None, limit: int = 16) -> list[int]:
    """Ids of the entries that ``claim_due`` would try to claim (a read; nothing is locked).

    Lets a delivery loop see that nothing is due without taking any write lock.
    """
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(_heads_query(now or utcnow(), limit))]


def claim_due(
    engine: Engine,
    owner: str,
    *,
    lease_seconds: float,
    now: datetime | None = None,
    limit: int = 16,
) -> list[Entry]:
    """Lease up to ``limit`` due entries (at most one per bin) to ``owner`` and return them.

    Each entry is taken with a compare-and-set UPDATE that re-checks, in the same statement, that
    it is still pending, due, unleased and at the head of its bin; a row count of 0 means another
    process was faster. ``owner`` should be unique per claim, so that a process never mistakes
    a lease it has lost and won back for the one it holds.
    """
    now = now or utcnow()
    until = now + timedelta(seconds=lease_seconds)
    e = _q.alias("e")
    blocked = (
        sa.exists()
        .where(
            e.c.bin_id == _q.c.bin_id,
            e.c.state == PENDING,
            sa.or_(
                e.c.request_seq < _q.c.request_seq,
                sa.and_(e.c.id != _q.c.id, e.c.lease_until >= now),
            ),
        )
        .correlate(_q)
    )
    claimed: list[int] = []
    with write_transaction(engine) as conn:
        for entry_id in [row[0] for row in conn.execute(_heads_query(now, limit))]:
            taken = conn.execute(
                sa.update(_q)
                .where(
                    _q.c.id == entry_id,
                    _q.c.state == PENDING,
                    _q.c.next_at <= now,
                    sa.or_(_q.c.lease_until.is_(None), _q.c.lease_until < now),
                    ~blocked,
                )
                .values(lease_owner=owner, lease_until=until)
            )
            if taken.rowcount == 1:
                claimed.append(entry_id)
        if not claimed:
            return []
        rows = conn.execute(
            sa.select(_q, requests.c.id.label("request_id"))
            .join(requests, requests.c.seq == _q.c.request_seq)
            .where(_q.c.id.in_(claimed), _q.c.lease_owner == owner)
            .order_by(_q.c.next_at, _q.c.id)
        ).all()
    return [
        Entry(
            id=row.id,
            request_seq=row.request_seq,
            request_id=row.request_id,
            bin_id=row.bin_id,
            url=row.url,
            tries=row.tries,
            lease_owner=owner,
        )
        for row in rows
    ]


def settle(
    engine: Engine,
    entry_id: int,
    owner: str,
    *,
    delivered: bool,
    error: str | None,
    delays: Sequence[float],
    give_up: bool = False,
    now: datetime | None = None,
) -> Outcome | None:
    """Record the outcome of one try of an entry leased to ``owner`` and release the lease.

    ``delays`` is the retry schedule: after failed try ``n`` the next one is due ``delays[n-1]``
    seconds later; a failure after the last delay (or with ``give_up``) marks the entry failed.
    Returns None, changing nothing, when the lease was lost (it lapsed and another process took
    the entry over, or the request was deleted meanwhile).
    """
    now = now or utcnow()
    with write_transaction(engine) as conn:
        row = conn.execute(
            sa.select(_q.c.tries).where(_q.c.id == entry_id, _q.c.lease_owner == owner)
        ).first()
        if row is None:
            return None
        tries = row.tries + 1
        retry_in: float | None = None
        if delivered:
            state, next_at, error = DELIVERED, now, None
        elif give_up or tries > len(delays):
            state, next_at = FAILED, now
        else:
            retry_in = float(delays[tries - 1])
            state, next_at = PENDING, now + timedelta(seconds=retry_in)
        result = conn.execute(
            sa.update(_q)
            .where(_q.c.id == entry_id, _q.c.lease_owner == owner, _q.c.tries == row.tries)
            .values(
                state=state,
                tries=tries,
                next_at=next_at,
                last_error=error,
                lease_owner=None,
                lease_until=None,
            )
        )
    if result.rowcount != 1:
        return None
    return Outcome(state=state, tries=tries, retry_in=retry_in)


def _latest(request_seq: int) -> sa.Select[Any]:
    # One entry per capture today; should a request ever be queued twice, the newest counts.
    return sa.select(_q).where(_q.c.request_seq == request_seq).order_by(_q.c.id.desc()).limit(1)


def retry_now(
    engine: Engine, request_seq: int, *, now: datetime | None = None
) -> dict[str, Any] | None:
    """Make the forward of request ``request_seq`` due at once; returns its state, or None.

    A pending entry is simply due now (it still waits behind older entries of its bin, and a try
    in flight is not interrupted). A failed entry is re-opened: pending, due now, with a fresh
    round of retries (its ``tries`` count starts again; the attempts of earlier rounds stay
    stored). A delivered entry is left as it is: send it again with a replay.
    """
    now = now or utcnow()
    with write_transaction(engine) as conn:
        row = conn.execute(_latest(request_seq)).first()
        if row is None:
            return None
        if row.state == PENDING:
            conn.execute(
                sa.update(_q).where(_q.c.id == row.id, _q.c.state == PENDING).values(next_at=now)
            )
        elif row.state == FAILED:
            conn.execute(
                sa.update(_q)
                .where(_q.c.id == row.id, _q.c.state == FAILED)
                .values(
                    state=PENDING,
                    tries=0,
                    next_at=now,
                    last_error=None,
                    lease_owner=None,
                    lease_until=None,
                )
            )
    return state_of(engine, request_seq, now=now)


def state_of(
    engine: Engine, request_seq: int, *, now: datetime | None = None
) -> dict[str, Any] | None:
    """The auto-forward state of request ``request_seq``, or None when it was never queued.

    ``next_at`` is set only while pending. ``in_flight``: a process holds a live lease (a try is
    under way). ``waiting_behind``: the public id of the older request of the same bin that must
    be settled first, or None when this one is at the head.
    """
    now = now or utcnow()
    with engine.connect() as conn:
        row = conn.execute(_latest(request_seq)).first()
        if row is None:
            return None
        pending = row.state == PENDING
        waiting_behind = None
        if pending:
            waiting_behind = conn.execute(
                sa.select(requests.c.id)
                .join(_q, _q.c.request_seq == requests.c.seq)
                .where(
                    _q.c.bin_id == row.bin_id,
                    _q.c.state == PENDING,
                    _q.c.request_seq < row.request_seq,
                )
                .order_by(_q.c.request_seq)
                .limit(1)
            ).scalar()
    lease_until = _utc(row.lease_until) if row.lease_until is not None else None
    return {
        "state": row.state,
        "url": row.url,
        "tries": row.tries,
        "next_at": iso(row.next_at) if pending else None,
        "last_error": row.last_error,
        "in_flight": bool(pending and lease_until is not None and lease_until >= now),
        "waiting_behind": waiting_behind,
        "created_at": iso(row.created_at),
    }


def _utc(value: datetime) -> datetime:
    # SQLite hands datetimes back without a zone; everything Hookbin stores is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def describe(state: dict[str, Any], *, now: datetime | None = None) -> str:
    """One line for people: "pending — try 3 in 4 s", "delivered on try 2", "gave up after ..."."""
    tries = state["tries"]
    if state["state"] == DELIVERED:
        return f"delivered on try {tries}"
    if state["state"] == FAILED:
        counted = "1 try" if tries == 1 else f"{tries} tries"
        return f"gave up after {counted}: {state['last_error'] or 'no answer'}"
    upcoming = f"try {tries + 1}"
    if state["in_flight"]:
        return f"pending — {upcoming} under way"
    if state["waiting_behind"]:
        return f"pending — {upcoming} waits for an earlier request of this bin"
    due = datetime.fromisoformat(state["next_at"].replace("Z", "+00:00"))
    seconds = (due - (now or utcnow())).total_seconds()
    if seconds <= 0:
        return f"pending — {upcoming} due now"
    return f"pending — {upcoming} in {math.ceil(seconds)} s"
