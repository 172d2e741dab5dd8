"""The auto-forward queue's storage functions, on a real SQLite file and on PostgreSQL.

Time is passed in (``now=``), so backoff and lease lapses are checked without sleeping. The
PostgreSQL runs are marked ``postgres`` and skip, saying why, when no server answers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from app.core import clock
from app.delivery import queue as fq
from app.storage import captures, store
from app.storage.db import forward_queue, make_engine, requests
from app.storage.migrate import upgrade

DELAYS = (1.0, 2.0, 4.0)
LEASE = 30.0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty database of each kind."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'queue.sqlite3'}"
        upgrade(url)
    else:
        url = request.getfixturevalue("postgres_url")
    made = make_engine(url)
    yield made
    made.dispose()


T0 = clock.utcnow().replace(microsecond=0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def capture(engine: Engine, bin_id: str, path: str, url: str | None = "http://t.test/") -> int:
    """Store one request of ``bin_id``, queued for forwarding to ``url``; its sequence."""
    [stored] = captures.insert_captures(
        engine,
        [
            captures.Capture(
                bin_id=bin_id,
                method="POST",
                path=path,
                query_string="",
                headers=[("Content-Type", "text/plain")],
                header_source="wire",
                content_type="text/plain",
                body=path.encode(),
                remote_addr="127.0.0.1",
                received_at=T0,
                forward_url=url,
            )
        ],
    )
    assert stored is not None
    return stored.seq


def public_id(engine: Engine, seq: int) -> str:
    with engine.connect() as conn:
        return conn.execute(sa.select(requests.c.id).where(requests.c.seq == seq)).scalar_one()


def claim(engine: Engine, owner: str, seconds: float, limit: int = 16) -> list[fq.Entry]:
    return fq.claim_due(engine, owner, lease_seconds=LEASE, now=at(seconds), limit=limit)


def settle(engine: Engine, entry: fq.Entry, seconds: float, **kwargs) -> fq.Outcome | None:
    kwargs.setdefault("delivered", False)
    kwargs.setdefault("error", None if kwargs["delivered"] else "the target answered 503")
    return fq.settle(engine, entry.id, entry.lease_owner, delays=DELAYS, now=at(seconds), **kwargs)


def test_capture_queues_a_pending_entry_in_its_transaction(engine: Engine) -> None:
    bin_id = store.create_bin(engine)["id"]
    seq = capture(engine, bin_id, "/a", url="http://target.test/hooks")
    plain = capture(engine, bin_id, "/b", url=None)
    state = fq.state_of(engine, seq, now=at(0))
    assert state is not None
    assert state["state"] == "pending" and state["tries"] == 0
    assert state["url"] == "http://target.test/hooks"
    assert state["next_at"] == clock.iso(T0)
    assert state["in_flight"] is False and state["waiting_behind"] is None
    assert fq.state_of(engine, plain) is None  # not a forwarding capture
    assert fq.describe(state, now=at(0)) == "pending — try 1 due now"


def test_one_head_per_bin_and_bins_are_independent(engine: Engine) -> None:
    a = store.create_bin(engine)["id"]
    b = store.create_bin(engine)["id"]
    a1, a2 = capture(engine, a, "/a1"), capture(engine, a, "/a2")
    b1 = capture(engine, b, "/b1")
    assert len(fq.due_heads(engine, now=at(0))) == 2
    claimed = claim(engine, "w1", 0)
    assert sorted(e.request_seq for e in claimed) == [a1, b1]
    assert all(e.tries == 0 and e.lease_owner == "w1" for e in claimed)
    # Leased: nobody else gets them, and a2 waits behind a1.
    assert claim(engine, "w2", 0) == []
    assert fq.state_of(engine, a1, now=at(0))["in_flight"] is True
    waiting = fq.state_of(engine, a2, now=at(0))
    assert waiting["waiting_behind"] == public_id(engine, a1)
    assert "waits for an earlier request" in fq.describe(waiting, now=at(0))

    head_a = next(e for e in claimed if e.request_seq == a1)
    outcome = settle(engine, head_a, 0.1, delivered=True)
    assert outcome == fq.Outcome(state="delivered", tries=1, retry_in=None)
    [next_a] = claim(engine, "w2", 0.2)
    assert next_a.request_seq == a2
    state = fq.state_of(engine, a1)
    assert state["state"] == "delivered" and state["next_at"] is None
    assert fq.describe(state) == "delivered on try 1"


def test_backoff_schedule_then_failed(engine: Engine) -> None:
    bin_id = store.create_bin(engine)["id"]
    seq = capture(engine, bin_id, "/x")
    t = 0.0
    for try_no, delay in enumerate(DELAYS, start=1):
        [entry] = claim(engine, f"w{try_no}", t)
        assert entry.tries == try_no - 1
        outcome = settle(engine, entry, t)
        assert outcome == fq.Outcome(state="pending", tries=try_no, retry_in=delay)
        state = fq.state_of(engine, seq, now=at(t))
        assert state["next_at"] == clock.iso(at(t + delay))
        assert fq.describe(state, now=at(t)) == f"pending — try {try_no + 1} in {int(delay)} s"
        # Not due a moment before the delay is up, due right after.
        assert claim(engine, "early", t + delay - 0.01) == []
        t += delay
    [last] = claim(engine, "last", t)
    assert settle(engine, last, t) == fq.Outcome(state="failed", tries=4, retry_in=None)
    state = fq.state_of(engine, seq)
    assert state["state"] == "failed" and state["last_error"] == "the target answered 503"
    assert fq.describe(state) == "gave up after 4 tries: the target answered 503"
    assert claim(engine, "after", t + 100) == []


def test_a_backing_off_head_holds_up_its_bin_only(engine: Engine) -> None:
    a = store.create_bin(engine)["id"]
    b = store.create_bin(engine)["id"]
    a1 = capture(engine, a, "/a1")
    a2 = capture(engine, a, "/a2")
    [head] = claim(engine, "w", 0)
    settle(engine, head, 0)  # backs off for 1 s
    b1 = capture(engine, b, "/b1")
    # a2 is due (queued at T0) but must wait behind a1; b1 goes.
    assert [e.request_seq for e in claim(engine, "w", 0.5)] == [b1]
    [retry] = claim(engine, "w", 1.0)
    assert retry.request_seq == a1 and retry.tries == 1
    settle(engine, retry, 1.0, delivered=True)
    assert [e.request_seq for e in claim(engine, "w", 1.0)] == [a2]


def test_refused_target_gives_up_at_once_and_the_next_one_goes(engine: Engine) -> None:
    bin_id = store.create_bin(engine)["id"]
    first = capture(engine, bin_id, "/1")
    second = capture(engine, bin_id, "/2")
    [entry] = claim(engine, "w", 0)
    outcome = settle(engine, entry, 0, error="refused: no private targets", give_up=True)
    assert outcome == fq.Outcome(state="failed", tries=1, retry_in=None)
    assert fq.describe(fq.state_of(engine, first)) == (
        "gave up after 1 try: refused: no private targets"
    )
    assert [e.request_seq for e in claim(engine, "w", 0)] == [second]


def test_a_lapsed_lease_is_taken_over_and_the_old_owner_cannot_settle(engine: Engine) -> None:
    bin_id = store.create_bin(engine)["id"]
    seq = capture(engine, bin_id, "/x")
    [dead] = claim(engine, "crashed", 0)
    assert claim(engine, "other", LEASE - 1) == []
    [taken] = claim(engine, "other", LEASE + 1)
    assert taken.id == dead.id and taken.tries == 0  # the crashed try was never counted
    assert settle(engine, dead, LEASE + 2, delivered=True) is None
    assert fq.state_of(engine, seq)["state"] == "pending"
    assert settle(engine, taken, LEASE + 2, delivered=True).state == "delivered"


def test_retry_now_makes_a_backing_off_entry_due(engine: Engine) -> None:
    bin_id = store.create_bin(engine)["id"]
    seq = capture(engine, bin_id, "/x")
    assert fq.retry_now(engine, seq + 1000) is None  # never queued
    [entry] = claim(engine, "w", 0)
    settle(engine, entry, 0)  # next try in 1 s
    assert claim(engine, "w", 0.2) == []
    state = fq.retry_now(engine, seq, now=at(0.2))
    assert state["state"] == "pending" and state["tries"] == 1
    assert state["next_at"] == clock.iso(at(0.2))
    [again] = claim(engine, "w", 0.2)
    assert again.request_seq == seq and again.tries == 1


def test_failed_entry_reopens_at_the_head_of_its_bin(engine: Engine) -> None:
    bin_id = store.create_bin(engine)["id"]
    seq = capture(engine, bin_id, "/x")
    later = capture(engine, bin_id, "/later")
    [entry] = claim(engine, "w", 0)
    settle(engine, entry, 0, give_up=True)
    [entry] = claim(engine, "w", 0)
    assert entry.request_seq == later  # the failed one no longer holds the bin up
    # Re-opened while the later entry is in flight: it waits until that try is settled.
    state = fq.retry_now(engine, seq, now=at(1))
    assert state["state"] == "pending" and state["tries"] == 0 and state["last_error"] is None
    assert claim(engine, "w2", 1) == []
    settle(engine, entry, 1, delivered=False)  # the later one backs off ...
    [reopened] = claim(engine, "w2", 5)  # ... and now the re-opened head goes first
    assert reopened.request_seq == seq and reopened.tries == 0
    settle(engine, reopened, 5, delivered=True)
    assert fq.describe(fq.state_of(engine, seq)) == "delivered on try 1"
    # Delivered entries are left alone.
    assert fq.retry_now(engine, seq)["state"] == "delivered"


def test_deleting_the_request_removes_its_entry(engine: Engine) -> None:
    bin_id = store.create_bin(engine)["id"]
    seq = capture(engine, bin_id, "/x")
    [entry] = claim(engine, "w", 0)
    assert store.delete_request(engine, entry.request_id)
    assert fq.state_of(engine, seq) is None
    assert settle(engine, entry, 0, delivered=True) is None
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(forward_queue)).scalar() == 0


def test_concurrent_claimers_never_share_an_entry(engine: Engine) -> None:
    bins = [store.create_bin(engine)["id"] for _ in range(6)]
    bin_of = {capture(engine, b, f"/{i}"): b for i in range(4) for b in bins}
    seen: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        # Each claimer has its own engine, like a separate process.
        own = make_engine(engine.url.render_as_string(hide_password=False))
        try:
            for round_no in range(500):
                owner = f"{name}:{round_no}"
                for entry in fq.claim_due(own, owner, lease_seconds=LEASE, limit=3):
                    with lock:
                        seen.append(entry.request_seq)
                    assert fq.settle(own, entry.id, owner, delivered=True, error=None, delays=())
                with lock:
                    if len(seen) >= len(bin_of):
                        return
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(seen) == sorted(bin_of)  # every entry once, none twice
    for bin_id in bins:  # each bin in capture order: the next is claimable only once settled
        mine = [seq for seq in seen if bin_of[seq] == bin_id]
        assert mine == sorted(mine)
