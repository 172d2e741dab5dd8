"""The live hub and the SQLite writer's building blocks, without a web server.

Real SQLite files through the same store functions the server uses; no fakes for the database.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from pathlib import Path

import pytest

from app.core import clock
from app.live.hub import Hub, Viewer
from app.storage import captures, store
from app.storage.db import make_engine
from app.storage.migrate import upgrade
from app.storage.writelock import FileWriteLock, LockTimeout
from tests.conftest import wait_until


@pytest.fixture
def engine(sqlite_url: str):
    upgrade(sqlite_url)
    eng = make_engine(sqlite_url)
    yield eng
    eng.dispose()


def _capture(bin_id: str, n: int = 0) -> captures.Capture:
    return captures.Capture(
        bin_id=bin_id,
        method="POST",
        path=f"/{n}",
        query_string="",
        headers=[("Content-Type", "text/plain")],
        header_source="wire",
        content_type="text/plain",
        body=str(n).encode(),
        remote_addr="127.0.0.1",
        received_at=clock.utcnow(),
    )


class CountingHub:
    """A hub over the real store that counts the queries it makes."""

    def __init__(self, engine, poll_seconds: float) -> None:
        self.fetches: list[str] = []
        #: Fetches that have returned or failed.
        self.finished = 0
        self.polls = 0
        #: How many of the next fetches fail, as with a database that went away.
        self.failing = 0

        def fetch_after(bin_id: str, after: int, limit: int):
            self.fetches.append(bin_id)
            try:
                if self.failing:
                    self.failing -= 1
                    raise RuntimeError("database went away")
                return store.requests_after(engine, bin_id, after, limit=limit)
            finally:
                self.finished += 1

        def changed_since(after: int):
            self.polls += 1
            return store.bins_changed_since(engine, after)

        self.hub = Hub(
            fetch_after=fetch_after,
            last_seq=lambda b: store.last_seq(engine, b),
            poll_seconds=poll_seconds,
            high_water=lambda: store.high_water(engine),
            changed_since=changed_since,
        )

    def caught_up(self, bins: list[str]) -> None:
        """Wait until the subscriptions' own catch-up fetches of ``bins`` are over; forget them."""
        wait_until(
            lambda: set(bins) <= set(self.fetches) and self.finished == len(self.fetches),
            5,
            "the catch-up fetches",
        )
        self.fetches.clear()


def test_the_safety_poll_delivers_a_request_whose_notification_was_lost(engine) -> None:
    counting = CountingHub(engine, poll_seconds=0.2)
    hub = counting.hub
    watched = [store.create_bin(engine)["id"] for _ in range(50)]
    viewers = [hub.subscribe(b, None) for b in watched]
    counting.caught_up(watched)

    # Stored without waking the hub: as if the notification from another process was lost.
    [stored] = captures.insert_captures(engine, [_capture(watched[7], 1)])
    item = viewers[7].get(timeout=3)

    assert item is not None and item["id"] == stored.id
    # One poll query covers all 50 bins, and only the bin that changed is fetched.
    assert counting.polls >= 1
    assert set(counting.fetches) == {watched[7]}
    assert all(v.get(timeout=0) is None for i, v in enumerate(viewers) if i != 7)


def test_a_wake_delivers_at_once_and_in_order(engine) -> None:
    counting = CountingHub(engine, poll_seconds=30)
    hub = counting.hub
    bin_id = store.create_bin(engine)["id"]
    viewer = hub.subscribe(bin_id, None)
    stored = captures.insert_captures(engine, [_capture(bin_id, n) for n in range(5)])
    hub.wake(bin_id)
    got = [viewer.get(timeout=3) for _ in range(5)]
    assert [g["id"] for g in got if g] == [s.id for s in stored if s]
    assert viewer.get(timeout=0.1) is None


def test_news_of_a_bin_is_delivered_by_whoever_brings_it(engine) -> None:
    # The capture writer and the notifier's listener feed viewers themselves: the rows are queued
    # when deliver_now returns, with no turn of the dispatcher in between.
    counting = CountingHub(engine, poll_seconds=30)
    hub = counting.hub
    watched, unwatched = (store.create_bin(engine)["id"] for _ in range(2))
    viewer = hub.subscribe(watched, None)
    counting.caught_up([watched])
    stored = captures.insert_captures(engine, [_capture(watched, n) for n in range(3)])
    captures.insert_captures(engine, [_capture(unwatched, 9)])

    hub.deliver_now([unwatched, watched])

    assert viewer.queued() == 3
    assert counting.fetches == [watched]  # nobody here watches the other bin: no query
    assert [viewer.get(timeout=0)["id"] for _ in range(3)] == [s.id for s in stored if s]
    # Nothing was left for the dispatcher to do: a bin left dirty would be fetched again, at the
    # latest along with a new subscription's catch-up.
    probe = store.create_bin(engine)["id"]
    hub.subscribe(probe, None)
    wait_until(lambda: probe in counting.fetches, 5, "the probe's catch-up fetch")
    assert counting.fetches == [watched, probe]


def test_deliveries_from_several_threads_queue_each_request_once(engine) -> None:
    hub = CountingHub(engine, poll_seconds=30).hub
    bin_id = store.create_bin(engine)["id"]
    viewer = hub.subscribe(bin_id, None)
    stored: list[captures.Stored | None] = []
    done = threading.Event()

    def deliver() -> None:
        while not done.is_set():
            hub.deliver_now([bin_id])

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for n in range(40):
            stored += captures.insert_captures(engine, [_capture(bin_id, n)])
    finally:
        done.set()
        for t in threads:
            t.join()
    hub.deliver_now([bin_id])
    got = [viewer.get(timeout=0) for _ in range(41)]
    assert [g["id"] for g in got if g] == [s.id for s in stored if s]


def test_a_failed_delivery_is_left_to_the_dispatcher(engine) -> None:
    counting = CountingHub(engine, poll_seconds=30)
    hub = counting.hub
    bin_id = store.create_bin(engine)["id"]
    viewer = hub.subscribe(bin_id, None)
    counting.caught_up([bin_id])
    [stored] = captures.insert_captures(engine, [_capture(bin_id)])
    counting.failing = 1
    hub.deliver_now([bin_id])  # its fetch fails: the dispatcher is woken to try again
    assert not counting.failing
    item = viewer.get(timeout=3)
    assert item is not None and item["id"] == stored.id


def test_bins_changed_since_reports_only_newer_rows(engine) -> None:
    a = store.create_bin(engine)["id"]
    b = store.create_bin(engine)["id"]
    captures.insert_captures(engine, [_capture(a)])
    mark = store.high_water(engine)
    stored = captures.insert_captures(engine, [_capture(b), _capture(b)])
    assert store.bins_changed_since(engine, mark) == {b: stored[-1].seq}
    assert store.bins_changed_since(engine, stored[-1].seq) == {}


def test_insert_skips_captures_of_deleted_bins_and_keeps_the_rest(engine) -> None:
    keep = store.create_bin(engine)["id"]
    gone = store.create_bin(engine)["id"]
    store.delete_bin(engine, gone)
    out = captures.insert_captures(
        engine, [_capture(keep, 1), _capture(gone, 2), _capture(keep, 3)]
    )
    assert out[1] is None and out[0] and out[2]
    assert out[2].seq == out[0].seq + 1
    assert [r["path"] for r in store.list_requests(engine, keep, limit=10)] == ["/3", "/1"]
    assert store.get_body(engine, out[2].seq) == b"3"


def test_a_large_batch_is_split_into_several_statements(engine) -> None:
    bin_id = store.create_bin(engine)["id"]
    out = captures.insert_captures(engine, [_capture(bin_id, n) for n in range(1200)])
    assert [o.seq for o in out] == list(range(out[0].seq, out[0].seq + 1200))
    assert store.count_requests(engine, bin_id) == 1200
    assert store.get_body(engine, out[1199].seq) == b"1199"


def test_a_slow_viewer_holds_a_bounded_backlog_and_still_gets_everything(engine) -> None:
    counting = CountingHub(engine, poll_seconds=30)
    counting.hub._max_backlog = 10
    bin_id = store.create_bin(engine)["id"]
    viewer = counting.hub.subscribe(bin_id, None)
    stored = captures.insert_captures(engine, [_capture(bin_id, n) for n in range(100)])
    counting.hub.wake(bin_id)
    # The backlog fills up to its bound; the rest stays in the database.
    wait_until(lambda: viewer.queued() == 10 and viewer.lagging, 5, "a full backlog")

    got = []
    while len(got) < 100:
        item = viewer.get(timeout=3)
        assert item is not None, f"stalled after {len(got)} items"
        got.append(item["id"])
        assert viewer.queued() <= 10
    assert got == [s.id for s in stored]
    assert viewer.get(timeout=0.2) is None


def test_viewer_offer_stops_at_the_backlog_and_skips_what_it_has() -> None:
    viewer = Viewer("b", max_backlog=3)
    viewer.last = 1
    viewer.offer([{"seq": n} for n in range(1, 10)])
    assert viewer.lagging and viewer.last == 4 and viewer.queued() == 3


def _hold_lock(path: str, held: mp.Event, release: mp.Event) -> None:
    with FileWriteLock(Path(path)):
        held.set()
        release.wait(10)


def test_the_write_lock_excludes_other_processes(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3-writer.lock"
    ctx = mp.get_context("spawn")
    held, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold_lock, args=(str(path), held, release))
    child.start()
    try:
        assert held.wait(20)
        lock = FileWriteLock(path)
        acquired = threading.Event()

        def take() -> None:
            with lock:
                acquired.set()

        taker = threading.Thread(target=take, daemon=True)
        taker.start()
        time.sleep(0.3)
        assert not acquired.is_set(), "the lock must wait while another process holds it"
        release.set()
        assert acquired.wait(5)
        taker.join(5)
    finally:
        release.set()
        child.join(10)


def test_the_capture_writer_waits_for_the_lock_without_blocking_and_gives_up_in_time(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite3-writer.lock"
    ctx = mp.get_context("spawn")
    held, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold_lock, args=(str(path), held, release))
    child.start()
    try:
        assert held.wait(20)
        lock = FileWriteLock(path)
        started = time.monotonic()
        with (
            pytest.raises(LockTimeout, match="held db.sqlite3-writer.lock"),
            lock.cooperatively(timeout=0.3),
        ):
            pytest.fail("the lock was taken while another process held it")
        assert time.monotonic() - started >= 0.3
        # Released while a writer waits: it gets the lock within a few retries.
        started = time.monotonic()  # before the timer starts: it fires 0.2 s after that
        threading.Timer(0.2, release.set).start()
        with lock.cooperatively(timeout=5):
            waited = time.monotonic() - started
        assert 0.2 <= waited < 3.0  # taken once released, long before the 5 s timeout
    finally:
        release.set()
        child.join(10)
