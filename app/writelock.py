"""One writer at a time across processes, without SQLite's sleeping busy handler.

Several gunicorn workers (and instances) write to one SQLite file. SQLite's own answer to a held
write lock is to sleep and retry on a ladder of 1, 2, 5 ... 100 ms, so a waiting writer often
sleeps on long after the lock was freed. An exclusive ``flock`` on a file next to the database
queues writers in the kernel instead: the next one runs the moment the previous commit ends.

Writers on a native thread (``app.dbwrites``) simply block in ``with lock:``. The capture writer
commits on the event loop (see ``services.build_services``) and uses ``lock.cooperatively()``:
the lock is tried without waiting, and only when another process holds it is the wait handed to
a native thread, so the loop never sleeps in ``flock``.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from app.blocking import run_blocking


class FileWriteLock:
    """An exclusive advisory lock on ``path``, reopened in each process (``flock`` locks belong
    to an open file, which a forked child would otherwise share with its parent)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1
        self._pid = 0

    def _file(self) -> int:
        if self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._pid = os.getpid()
        return self._fd

    def __enter__(self) -> FileWriteLock:
        fcntl.flock(self._file(), fcntl.LOCK_EX)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    @contextmanager
    def cooperatively(self) -> Iterator[None]:
        """Hold the lock from the event loop: wait for another process's commit off the loop."""
        fd = self._file()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            run_blocking(fcntl.flock, fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


def writer_lock_path(db_file: Path) -> Path:
    """The lock file every SQLite writer of ``db_file`` takes (captures, rule counters)."""
    return db_file.with_name(db_file.name + "-writer.lock")
