"""Durable but fast writes: an acknowledged capture survives a crash; commits are batched."""

from __future__ import annotations

import signal
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from app.writer import CommitBatcher
from tests.conftest import start_server


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
        srv.stop()
