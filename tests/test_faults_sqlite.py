"""SQLite faults: a worker killed mid-load, a disk that fills up.

The whole server killed with SIGKILL is covered by ``test_durability``; this adds one worker
killed while its siblings go on, and writes that fail because the file system refuses them.
"""

from __future__ import annotations

import os
import resource
import sqlite3
from pathlib import Path

import httpx

from tests.conftest import start_server
from tests.faults_support import (
    Senders,
    kill_a_worker_under_load,
    process_tree,
    wait_until,
)


def _stored_ids(sqlite_url: str) -> set[str]:
    with sqlite3.connect(sqlite_url.split("///", 1)[1]) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM requests")}


def test_kill_9_of_one_worker_under_load_loses_no_acknowledged_capture(
    tmp_path: Path, sqlite_url: str
) -> None:
    srv = start_server(sqlite_url, tmp_path, workers=2)
    senders = None
    try:
        bin_ = srv.create_bin()
        senders = Senders(bin_["capture_url"], threads=8)
        wait_until(lambda: len(senders.acknowledged) >= 300, 60, "no load")
        kill_a_worker_under_load(srv.process.pid, senders)
        senders.join()
    finally:
        if senders is not None:
            senders.join()
        srv.stop()
    assert not senders.bad, senders.bad[:5]
    missing = set(senders.acknowledged) - _stored_ids(sqlite_url)
    assert not missing, f"{len(missing)} acknowledged captures lost"


def _limit_file_size(root: int, limit: int) -> None:
    # RLIMIT_FSIZE makes every write past ``limit`` bytes into any file fail with EFBIG (Python
    # ignores SIGXFSZ), as a full disk makes writes fail with ENOSPC.
    for pid in process_tree(root):
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


def test_a_full_disk_answers_503_and_acknowledges_only_what_was_stored(
    tmp_path: Path, sqlite_url: str
) -> None:
    srv = start_server(sqlite_url, tmp_path, workers=2)
    db = Path(sqlite_url.split("///", 1)[1])
    senders = None
    try:
        bin_ = srv.create_bin()
        files = [db, db.with_name(db.name + "-wal"), srv.log_path]
        room = max(f.stat().st_size for f in files if f.exists()) + 2 * 1024 * 1024
        _limit_file_size(srv.process.pid, room)
        senders = Senders(bin_["capture_url"], threads=4, body=os.urandom(64 * 1024))
        wait_until(lambda: senders.count(503) >= 20, 60, "the full disk never refused a capture")
        stored_before = len(senders.acknowledged)
        assert stored_before > 0, "some captures fitted before the disk was full"

        # Room again: the same processes go on storing, without a restart.
        _limit_file_size(srv.process.pid, resource.RLIM_INFINITY)
        wait_until(
            lambda: len(senders.acknowledged) >= stored_before + 50,
            60,
            "captures did not resume once there was room",
        )
        senders.join()
        listed = httpx.get(f"{srv.url}/api/bins/{bin_['id']}/requests?limit=1", timeout=10)
        assert listed.status_code == 200
    finally:
        if senders is not None:
            senders.join()
        srv.stop()
    assert not senders.bad, f"answers other than 200 or 503 + Retry-After: {senders.bad[:5]}"
    missing = set(senders.acknowledged) - _stored_ids(sqlite_url)
    assert not missing, f"{len(missing)} acknowledged captures are not stored"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
