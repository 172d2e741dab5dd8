"""One writer at a time across processes, without SQLite's sleeping busy handler.

Several gunicorn workers (and instances) write to one SQLite file. SQLite's own answer to a held
write lock is to sleep and retry on a ladder of 1, 2, 5 ... 100 ms, so a waiting writer often
sleeps on long after the lock was freed. An exclusive ``flock`` on a file next to the database
does better.

Writers on a native thread (``writes``) simply block in ``with lock:``; the kernel queues
them. The capture writer commits on the event loop (see ``services.build_services``) and uses
``lock.cooperatively()``: the lock is tried without waiting, and while another process holds it
the committing greenlet sleeps a fraction of a millisecond between tries, so the loop goes on
serving requests. An earlier version waited in a blocking ``flock`` on a native thread; that
thread got the lock and then had to win the GIL back from its own busy event loop, holding the
lock for up to a GIL switch interval while the other worker's commit waited.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

# Between tries for a lock another process holds: a commit there takes about a millisecond, so
# start well below that and back off to a few tries per millisecond.
_FIRST_RETRY_SECONDS = 0.0002
_LONGEST_RETRY_SECONDS = 0.002


class LockTimeout(TimeoutError):
    """Another process held the write lock for longer than the caller would wait."""


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
    def cooperatively(self, timeout: float = 5.0) -> Iterator[None]:
        """Hold the lock from the event loop, sleeping (cooperatively) while another has it.

        Raises ``LockTimeout`` when the lock stays taken for ``timeout`` seconds.
        """
        fd = self._file()
        delay = _FIRST_RETRY_SECONDS
        deadline = 0.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                if not deadline:
                    deadline = now + timeout
                elif now >= deadline:
                    raise LockTimeout(
                        f"another process held {self.path.name} for over {timeout:g} s"
                    ) from None
                time.sleep(delay)  # cooperative under gevent
                delay = min(delay * 1.5, _LONGEST_RETRY_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


def writer_lock_path(db_file: Path) -> Path:
    """The lock file every SQLite writer of ``db_file`` takes (captures, rule counters)."""
    return db_file.with_name(db_file.name + "-writer.lock")
