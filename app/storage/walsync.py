"""Durable SQLite capture commits without an fsync under the write lock or a checkpoint on the loop.

With ``synchronous=FULL`` SQLite fsyncs the write-ahead log inside every COMMIT, while the
cross-process write lock is held, and every thousand pages or so the committing connection also
copies the log back into the database file (a checkpoint, with two more fsyncs). The capture
writer commits on the event loop (see ``wiring``), so a checkpoint froze the whole worker,
and each fsync kept the other worker's commit waiting too.

So for ``HOOKBIN_SQLITE_SYNCHRONOUS=FULL`` the capture writer's connection runs with ``NORMAL``
and only a far-off automatic checkpoint, and this module supplies what it gave up:

* ``WalFile.sync`` flushes the log with ``fdatasync`` after the commit, once the write lock is
  released. ``batcher.CommitBatcher`` acknowledges a batch only after that returns, so an
  acknowledged capture is on disk exactly as with FULL, and one flush covers every commit before
  it, the other processes' included.
* ``Checkpointer`` runs SQLite's PASSIVE checkpoint on its own connection, on a native thread, a
  short while after commits, so the log stays about as short as SQLite's automatic checkpoint
  keeps it. Under a load without pauses it cannot reach the end of the log, which then never
  starts over; once the log passes a size limit the capture writer finishes the checkpoint
  under the write lock (``Checkpointer.finish``).

Why that is as durable as FULL: in WAL mode with NORMAL, SQLite syncs the log before each
checkpoint and the database file after it, so a log that is rewound only ever drops frames that
are already safe in the database file. The frames of a commit are in the ``-wal`` file when
COMMIT returns; ``fdatasync`` on that file (through any descriptor of it) makes them durable.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class WalFile:
    """The ``-wal`` file of one SQLite database, for flushing it to disk."""

    def __init__(self, db_file: Path) -> None:
        self.db_file = db_file
        self.path = db_file.with_name(db_file.name + "-wal")

    def sync(self) -> None:
        """Flush every commit written to the log so far to disk."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            # SQLite removes the log only after checkpointing all of it when the last connection
            # closes, and that checkpoint syncs the database file. Flush it all the same.
            fd = os.open(self.db_file, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)


class Checkpointer:
    """Checkpoint the log off the event loop, at most once per ``interval`` seconds of commits.

    ``run_blocking`` hands the checkpoint (one call into SQLite, which releases the GIL) to a
    native thread. Each process owns one connection for it, opened on first use after a fork.
    """

    def __init__(
        self,
        db_file: Path,
        run_blocking: Callable[..., object],
        *,
        interval: float = 0.25,
        synchronous: str = "NORMAL",
        wal_limit_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.db_file = db_file
        self._page_size = 4096
        self._wal_limit = wal_limit_bytes
        # How the checkpoint itself syncs: NORMAL (and FULL) fsync the log before it and the
        # database file after it, which is what makes rewinding the log safe; OFF does neither.
        self._synchronous = synchronous
        self._run_blocking = run_blocking
        self._interval = interval
        self._dirty = threading.Event()
        self._pid = 0
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._finish_due = False
        self.checkpoints = 0
        self.finishes = 0

    def committed(self) -> None:
        """Note that the log grew; a checkpoint follows within ``interval`` seconds."""
        if self._closed:
            return
        if self._pid != os.getpid():
            self._start()
        self._dirty.set()

    def close(self) -> None:
        """Stop checkpointing and close the connection (SQLite checkpoints on its last close)."""
        self._closed = True
        self._dirty.set()

    def _start(self) -> None:
        self._pid = os.getpid()
        self._conn = None  # a connection must not cross a fork
        threading.Thread(target=self._run, name="hookbin-checkpoint", daemon=True).start()

    def _run(self) -> None:
        while not self._closed:
            self._dirty.wait()
            # Let the log collect a few hundred milliseconds of commits: a checkpoint per batch
            # would copy the same hot pages over and over.
            time.sleep(self._interval)  # cooperative under gevent
            self._dirty.clear()
            if self._closed:
                break
            try:
                self._run_blocking(self.checkpoint)
            except Exception:  # noqa: BLE001 - the next commit tries again
                log.exception("checkpoint of %s failed", self.db_file)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def checkpoint(self) -> None:
        """One PASSIVE checkpoint: copy what no reader still needs back into the database file.

        PASSIVE never waits for readers or writers, so it cannot hold up a capture; what it
        leaves behind, the next one copies.
        """
        if self._conn is None:
            self._conn = sqlite3.connect(
                self.db_file, check_same_thread=False, isolation_level=None, timeout=0
            )
            self._conn.execute(f"PRAGMA synchronous={self._synchronous}")
            self._page_size = self._conn.execute("PRAGMA page_size").fetchone()[0]
        _busy, log_frames, _copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.checkpoints += 1
        # The length of the log now (not the size of its file, which never shrinks): frames of
        # a page and a 24-byte header each.
        if log_frames * (self._page_size + 24) > self._wal_limit:
            self._finish_due = True

    def finish_due(self) -> bool:
        """True once after a background checkpoint left a long log: the writer should
        ``finish`` it."""
        due, self._finish_due = self._finish_due, False
        return due

    def finish(self, cursor: Any) -> None:
        """Copy the rest of the log, with ``cursor`` of a writer that holds the write lock.

        SQLite starts the log over from its beginning only when a write begins with every
        frame of it copied into the database file. Under steady load the background
        checkpoint never gets there: commits go on while it copies, so the log would grow
        without end, and a flush of a growing file costs more than one of a file whose blocks
        are reused. With the write lock held nothing is added while this copies the few frames
        committed since the background checkpoint, and the next commit starts the log over. It
        holds the lock for two fsyncs, so it is done only once the log has passed
        ``wal_limit_bytes``, never at a load with pauses, where the log starts over by itself.
        """
        try:
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:  # the batch is committed: its callers must still hear so
            log.exception("finishing the checkpoint of %s failed", self.db_file)
            return
        self.finishes += 1
