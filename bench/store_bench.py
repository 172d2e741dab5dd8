"""Store micro-benchmark: the live hub's read of new rows, and one capture commit.

Run from the project root (a few seconds)::

    .venv/bin/python bench/store_bench.py

On a fresh SQLite file (default durable settings) with 30,000 stored 1 KB captures, it times:

* ``store.requests_after`` (plain DB-API, what the live hub runs after every commit) against
  ``store.list_requests`` (SQLAlchemy Core rows), both reading the same 15 newest rows of a bin,
  interleaved, so the ratio comes from one run;
* ``captures.insert_captures`` of a batch of 15 captures (one transaction, one fsync).

Prints medians per call and the ratio.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.core import clock  # noqa: E402
from app.storage import captures, store  # noqa: E402
from app.storage.db import make_engine  # noqa: E402
from app.storage.migrate import upgrade  # noqa: E402
from app.storage.writelock import FileWriteLock, writer_lock_path  # noqa: E402

BODY = b'{"event":"bench.capture","pad":"' + b"x" * (1024 - 34) + b'"}'
HEADERS = [
    ("Host", "127.0.0.1:8000"),
    ("Content-Type", "application/json"),
    ("Content-Length", "1024"),
    ("User-Agent", "hookbin-bench"),
]


def capture(bin_id: str, n: int) -> captures.Capture:
    """One 1 KB JSON capture tagged ``n=<n>``."""
    return captures.Capture(
        bin_id=bin_id,
        method="POST",
        path="/push",
        query_string=f"n={n}",
        headers=HEADERS,
        header_source="wire",
        content_type="application/json",
        body=BODY,
        remote_addr="127.0.0.1",
        received_at=clock.utcnow(),
        signature={"provider": None, "status": "unchecked", "reason": "no signing secret"},
        signing_rev=0,
        answer_status=200,
    )


def per_call_ms(fn, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
    """Milliseconds per call of ``fn``, ``repeat`` times."""
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    """Run the measurements and print the table."""
    workdir = Path(tempfile.mkdtemp(prefix="hookbin-store-bench-", dir="/var/tmp"))
    db = workdir / "store.sqlite3"
    url = f"sqlite:///{db}"
    upgrade(url)
    engine = make_engine(url)
    writer = make_engine(url, single_connection=True)
    lock = FileWriteLock(writer_lock_path(db))
    bin_id = store.create_bin(engine)["id"]

    commits: list[float] = []
    n = 0
    for _ in range(2000):
        batch = [capture(bin_id, n + i) for i in range(15)]
        n += 15
        t0 = time.perf_counter()
        captures.insert_captures(writer, batch, write_lock=lock)
        commits.append((time.perf_counter() - t0) * 1000)

    newest = store.list_requests(engine, bin_id, limit=16)
    after = newest[-1]["seq"]  # the 16th newest: 15 rows lie above it
    assert len(store.requests_after(engine, bin_id, after)) == 15
    fast: list[float] = []
    core: list[float] = []
    for _ in range(20):  # interleaved rounds
        fast += per_call_ms(lambda: store.requests_after(engine, bin_id, after), 25)
        core += per_call_ms(lambda: store.list_requests(engine, bin_id, limit=15), 25)

    fast_ms, core_ms = statistics.median(fast), statistics.median(core)
    commits.sort()
    print(f"rows stored: {n} (1 KB JSON each), SQLite synchronous=FULL")
    print("| measurement | median ms per call | ratio |")
    print("|---|---:|---:|")
    print(f"| list_requests, 15 rows (SQLAlchemy Core rows, baseline) | {core_ms:.3f} | 1.00x |")
    print(
        f"| requests_after, 15 rows (plain DB-API, live hub) | {fast_ms:.3f} | "
        f"{fast_ms / core_ms:.2f}x the time |"
    )
    print(
        f"| insert_captures, batch of 15 (p50 / p99 / max) | {commits[len(commits) // 2]:.3f} / "
        f"{commits[int(len(commits) * 0.99)]:.3f} / {commits[-1]:.3f} | |"
    )
    engine.dispose()
    writer.dispose()
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
