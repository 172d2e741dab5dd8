"""Durable but fast writes: an acknowledged capture survives a crash; commits are batched."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from app.core import clock
from app.storage import captures, store
from app.storage.batcher import CommitBatcher
from app.storage.db import make_engine
from app.storage.migrate import upgrade
from app.storage.walsync import Checkpointer
from app.wiring import build_services
from tests.conftest import ROOT, start_server


def test_every_acknowledged_capture_survives_kill_9(tmp_path: Path, sqlite_url: str) -> None:
    srv = start_server(sqlite_url, tmp_path, workers=2)
    bin_ = srv.create_bin()
    acknowledged: list[str] = []
    stop = threading.Event()

    def sender() -> None:
        with httpx.Client(timeout=5) as client:
            while not stop.is_set():
                try:
                    response = client.post(bin_["capture_url"], content=b"x" * 512)
                except httpx.HTTPError:
                    return  # the server died under us: that request was never acknowledged
                if response.status_code == 200:
                    acknowledged.append(response.json()["request_id"])

    threads = [threading.Thread(target=sender) for _ in range(8)]
    for t in threads:
        t.start()
    while len(acknowledged) < 300:
        threading.Event().wait(0.01)
    # SIGKILL the whole process group: master and workers die mid-flight, no cleanup runs.
    import os

    for pid in _process_tree(srv.process.pid):
        os.kill(pid, signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join()
    srv.process.wait()

    db_path = sqlite_url.split("///", 1)[1]
    with sqlite3.connect(db_path) as conn:
        stored = {row[0] for row in conn.execute("SELECT id FROM requests")}
    missing = set(acknowledged) - stored
    assert not missing, f"{len(missing)} acknowledged captures lost"


def _process_tree(root: int) -> list[int]:
    children = Path(f"/proc/{root}/task/{root}/children")
    out = [root]
    if children.exists():
        for child in children.read_text().split():
            out += _process_tree(int(child))
    return out


def test_concurrent_submits_share_commits() -> None:
    committed: list[list[int]] = []
    gate = threading.Event()

    def commit(rows):
        gate.wait(1)  # hold the first commit so that others queue up behind it
        committed.append(list(rows))
        return [r * 10 for r in rows]

    batcher: CommitBatcher[int, int] = CommitBatcher(commit, batch_max=100)
    with ThreadPoolExecutor(max_workers=50) as pool:
        futures = [pool.submit(batcher.submit, i) for i in range(50)]
        threading.Event().wait(0.2)
        gate.set()
        results = [f.result() for f in futures]
    assert results == [i * 10 for i in range(50)]
    assert sorted(r for batch in committed for r in batch) == list(range(50))
    assert len(committed) < 10, "submits waiting together must share a commit"
    assert batcher.rows == 50


def test_a_failed_commit_fails_every_waiter_and_the_next_batch_works() -> None:
    calls = {"n": 0}

    def commit(rows):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("disk full")
        return rows

    batcher: CommitBatcher[str, str] = CommitBatcher(commit)
    with pytest.raises(RuntimeError, match="disk full"):
        batcher.submit("a")
    assert batcher.submit("b") == "b"


def test_store_failure_answers_503_and_acknowledges_nothing(
    tmp_path: Path, sqlite_url: str
) -> None:
    srv = start_server(sqlite_url, tmp_path, extra_env={"HOOKBIN_SQLITE_BUSY_TIMEOUT_MS": "300"})
    try:
        bin_ = srv.create_bin()
        assert httpx.post(bin_["capture_url"], content=b"ok").status_code == 200
        db_path = sqlite_url.split("///", 1)[1]
        # Another process holds the write lock longer than the server's busy timeout allows.
        blocker = sqlite3.connect(db_path, timeout=1, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            response = httpx.post(bin_["capture_url"], content=b"lost?", timeout=60)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        items = httpx.get(f"{srv.url}/api/bins/{bin_['id']}/requests").json()["items"]
        assert len(items) == 1
    finally:
        srv.close()


# --- the flush after the commit (HOOKBIN_SQLITE_SYNCHRONOUS=FULL, see app.walsync) ---------------


def test_a_capture_is_acknowledged_only_after_the_flush_that_follows_its_commit() -> None:
    flushing = threading.Event()
    flushed = threading.Event()
    published: list[list[int]] = []

    def sync() -> None:
        flushing.set()
        assert flushed.wait(5)

    batcher: CommitBatcher[int, int] = CommitBatcher(
        lambda rows: list(rows), sync=sync, published=lambda rows, _: published.append(list(rows))
    )
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(batcher.submit, 7)
        assert flushing.wait(5)
        threading.Event().wait(0.2)
        # Committed, not yet on disk: neither the sender nor live viewers may hear of it.
        assert not future.done()
        assert published == []
        flushed.set()
        assert future.result(5) == 7
    assert published == [[7]]


def test_a_failed_flush_acknowledges_nothing_and_the_next_one_works() -> None:
    calls = {"n": 0}
    published: list[list[str]] = []

    def sync() -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("I/O error")

    batcher: CommitBatcher[str, str] = CommitBatcher(
        lambda rows: list(rows), sync=sync, published=lambda rows, _: published.append(list(rows))
    )
    with pytest.raises(OSError, match="I/O error"):
        batcher.submit("a")
    assert published == []
    assert batcher.submit("b") == "b"
    assert published == [["b"]]


def test_captures_that_arrive_during_a_flush_share_the_next_commit_and_flush() -> None:
    gate = threading.Event()
    flushes: list[int] = []

    def sync() -> None:
        flushes.append(len(flushes))
        if len(flushes) == 1:
            assert gate.wait(5)  # a slow disk: captures keep arriving meanwhile

    commits: list[list[int]] = []

    def commit(rows):
        commits.append(list(rows))
        return [r * 2 for r in rows]

    batcher: CommitBatcher[int, int] = CommitBatcher(commit, sync=sync)
    with ThreadPoolExecutor(max_workers=20) as pool:
        first = pool.submit(batcher.submit, 0)
        while not flushes:
            threading.Event().wait(0.01)
        rest = [pool.submit(batcher.submit, i) for i in range(1, 20)]
        threading.Event().wait(0.3)
        assert commits == [[0]], "nothing commits while the flush before it is under way"
        assert not any(f.done() for f in rest)
        gate.set()
        assert first.result(5) == 0
        assert [f.result(5) for f in rest] == [i * 2 for i in range(1, 20)]
    assert [sorted(c) for c in commits] == [[0], list(range(1, 20))]
    assert len(flushes) == 2, "the 19 that waited share one commit and one flush"


def test_a_leader_that_is_killed_mid_commit_fails_its_batch_and_hands_over() -> None:
    class Killed(BaseException):
        pass

    calls: list[list[str]] = []
    gate = threading.Event()

    def commit(rows):
        calls.append(list(rows))
        if rows == ["doomed"]:
            assert gate.wait(5)
            raise Killed
        return list(rows)

    batcher: CommitBatcher[str, str] = CommitBatcher(commit)
    outcomes: dict[str, object] = {}

    def submit(row: str) -> None:
        try:
            outcomes[row] = batcher.submit(row)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertions
            outcomes[row] = exc

    threads = [threading.Thread(target=submit, args=("doomed",), daemon=True)]
    threads[0].start()
    while not calls:
        threading.Event().wait(0.01)
    threads += [threading.Thread(target=submit, args=(f"w{i}",), daemon=True) for i in range(3)]
    for t in threads[1:]:
        t.start()
    threading.Event().wait(0.2)
    gate.set()
    for t in threads:
        t.join(5)
    assert isinstance(outcomes["doomed"], Killed)
    # Not stuck behind a leader that is gone: the oldest waiter leads the next batch.
    assert [outcomes.get(f"w{i}") for i in range(3)] == ["w0", "w1", "w2"]
    assert batcher.submit("next") == "next"
    assert calls[0] == ["doomed"] and sorted(calls[1]) == ["w0", "w1", "w2"]


def _capture(bin_id: str, body: bytes) -> captures.Capture:
    return captures.Capture(
        bin_id=bin_id,
        method="POST",
        path="/",
        query_string="",
        headers=[("Content-Type", "application/octet-stream")],
        header_source="wire",
        content_type="application/octet-stream",
        body=body,
        remote_addr="127.0.0.1",
        received_at=clock.utcnow(),
    )


@pytest.mark.parametrize(("synchronous", "flushes"), [("FULL", True), ("NORMAL", False)])
def test_full_flushes_the_log_after_each_commit_normal_leaves_it_to_sqlite(
    tmp_path: Path, synchronous: str, flushes: bool
) -> None:
    url = f"sqlite:///{tmp_path / 'flush.sqlite3'}"
    upgrade(url)
    services = build_services(Settings(database_url=url, sqlite_synchronous=synchronous))
    try:
        bin_id = store.create_bin(services.engine)["id"]
        stored = services.batcher.submit(_capture(bin_id, b"payload"))
        assert stored is not None
        assert store.get_body(services.engine, stored.seq) == b"payload"
        assert services.batcher.syncs == (1 if flushes else 0)
        # The capture writer's own connection never waits for the disk inside COMMIT under FULL:
        # the flush after it does.
        assert services.writer_engine is not None
        raw = services.writer_engine.raw_connection()
        try:
            mode = raw.cursor().execute("PRAGMA synchronous").fetchone()[0]
        finally:
            raw.close()
        assert mode == 1  # NORMAL, in both cases
    finally:
        services.close()


def test_the_checkpointer_copies_the_log_into_the_database_file(tmp_path: Path) -> None:
    db = tmp_path / "ckpt.sqlite3"
    url = f"sqlite:///{db}"
    upgrade(url)
    services = build_services(Settings(database_url=url))  # FULL: checkpoints off the loop
    try:
        bin_id = store.create_bin(services.engine)["id"]
        before = db.stat().st_size
        body = bytes(range(256)) * 16  # 4 KiB
        for _ in range(500):
            assert services.batcher.submit(_capture(bin_id, body)) is not None
        # The writer's own automatic checkpoint is thousands of pages away; only the
        # checkpointer (a quarter of a second after commits) moves 2 MB into the file.
        deadline = time.monotonic() + 10
        while db.stat().st_size < before + 500 * len(body) and time.monotonic() < deadline:
            threading.Event().wait(0.05)
        assert db.stat().st_size >= before + 500 * len(body)
    finally:
        services.close()


# --- batches wait for the worker to finish reading what has arrived (gevent only) ---------------

_IDLE_BATCHING = """
from gevent import monkey; monkey.patch_all()
import gevent, json, sys, time
from app.storage.batcher import CommitBatcher
batches = []
def commit(rows):
    batches.append(list(rows))
    return list(rows)
batcher = CommitBatcher(commit, idle_max_seconds=float(sys.argv[1]))
def request(i):
    for _ in range(i % 5):  # a request takes a few turns of the loop to read and handle
        gevent.sleep(0)
    batcher.submit(i)
gevent.joinall([gevent.spawn(request, i) for i in range(40)])
# A loop that never runs out of work (until the commit is through, or 2 s at most) still
# commits within idle_max.
done = False
stop = time.monotonic() + 2.0
def busy():
    while not done and time.monotonic() < stop:
        gevent.sleep(0)
spinner = gevent.spawn(busy)
gevent.sleep(0)
started = time.monotonic()
batcher.submit(99)
waited = time.monotonic() - started
done = True
spinner.join()
print(json.dumps({"batches": [len(b) for b in batches], "busy_wait": waited}))
"""


def _idle_batching(idle_max: float) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _IDLE_BATCHING, str(idle_max)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_commit_waits_until_every_request_being_read_has_joined_it() -> None:
    joined = _idle_batching(0.05)
    assert joined["batches"][0] == 40, "all 40 requests in flight share the first commit"
    assert 0.04 <= joined["busy_wait"] < 0.5, "a loop that never idles delays a commit by idle_max"
    eager = _idle_batching(0)
    assert eager["batches"][0] < 40, "without it, the writer commits whatever is there first"
    assert eager["busy_wait"] < 0.04


def _log_frames(db: Path) -> int:
    """Frames in the log now (SQLite's own count, from a PASSIVE checkpoint that copies none
    while nothing is new)."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
    finally:
        conn.close()


@pytest.mark.parametrize("limit", [64 * 1024, 1 << 40])
def test_a_log_the_background_checkpoint_cannot_finish_is_finished_under_the_lock(
    tmp_path: Path, limit: int
) -> None:
    db = tmp_path / "steady.sqlite3"
    url = f"sqlite:///{db}"
    upgrade(url)
    engine = make_engine(url)
    writer = make_engine(url, sqlite_synchronous="NORMAL", single_connection=True)
    checkpointer = Checkpointer(db, lambda fn: fn(), wal_limit_bytes=limit)
    bin_id = store.create_bin(engine)["id"]
    body = bytes(range(256)) * 16  # 4 KiB

    def commit(n: int) -> None:
        for _ in range(n):
            then = checkpointer.finish if checkpointer.finish_due() else None
            captures.insert_captures(writer, [_capture(bin_id, body)], then=then)

    try:
        commit(50)
        # Commits land while the background checkpoint copies (a reader's snapshot stands in
        # for them here), so it stops short of the end of the log and SQLite cannot start over.
        reader = sqlite3.connect(db)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM requests").fetchall()
        commit(50)
        checkpointer.checkpoint()
        reader.rollback()
        reader.close()
        commit(2)  # the first of these finishes the checkpoint (when due), the second starts over
        frames = _log_frames(db)
        if limit < 1 << 40:
            assert checkpointer.finishes == 1
            assert frames < 20, f"the log should have started over, it holds {frames} frames"
        else:  # never due: the log holds everything since the first commit
            assert checkpointer.finishes == 0
            assert frames > 100
    finally:
        writer.dispose()
        engine.dispose()


def test_the_capture_writer_finishes_checkpoints_of_a_long_log(tmp_path: Path) -> None:
    db = tmp_path / "busy.sqlite3"
    url = f"sqlite:///{db}"
    upgrade(url)
    services = build_services(Settings(database_url=url, sqlite_wal_limit_mb=0.25))
    try:
        bin_id = store.create_bin(services.engine)["id"]
        body = bytes(range(256)) * 16
        deadline = time.monotonic() + 10
        assert services.checkpointer is not None
        while services.checkpointer.finishes == 0 and time.monotonic() < deadline:
            for _ in range(100):
                assert services.batcher.submit(_capture(bin_id, body)) is not None
        assert services.checkpointer.finishes >= 1
    finally:
        services.close()
