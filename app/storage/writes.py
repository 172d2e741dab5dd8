"""Short write transactions outside the capture path, with the capture writer's discipline.

On an SQLite file every process of a deployment writes to one file. A write run on the gevent
event loop would freeze the whole worker for its fsync, and for as long as another process holds
the write lock. These writes are rare and may queue behind the capture writer of every process,
so ``SerialWrites.run`` runs the transaction on a native thread (``core.blocking``), on a
connection of its own, while holding the cross-process ``flock`` that queues SQLite writers
(``writelock``): it neither blocks the loop nor meets SQLITE_BUSY. Callers in this process
take turns for that connection.

PostgreSQL waits cooperatively under gevent, so there the function simply runs on the shared
engine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Concatenate, ParamSpec, TypeVar

from sqlalchemy.engine import Connection, Engine

from app.config import Settings
from app.core.blocking import run_blocking
from app.storage.db import make_engine, sqlite_file
from app.storage.writelock import FileWriteLock, writer_lock_path

P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that takes SQLite's write lock up front (``BEGIN IMMEDIATE``).

    A deferred transaction that reads first and writes later can fail with SQLITE_BUSY instead
    of waiting its turn; PostgreSQL ignores the option.
    """
    with engine.connect() as conn:
        conn.execution_options(sqlite_immediate=True)
        with conn.begin():
            yield conn


class SerialWrites:
    """Run ``fn(engine, ...)`` write transactions one at a time, off the event loop on SQLite."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self._shared = engine
        db_file = sqlite_file(settings.database_url)
        self._base: Engine | None = None
        self._engine: Engine | None = None
        self._file_lock: FileWriteLock | None = None
        if db_file is not None:
            # One connection, used by one native thread at a time (see ``run``): a pool's own
            # locks would be gevent's, which must not be taken off the loop.
            self._base = make_engine(
                settings.database_url,
                sqlite_synchronous=settings.sqlite_synchronous,
                sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms,
                single_connection=True,
            )
            # No statement cache: its size check takes a lock that gevent has patched, and
            # compiling these few small statements again costs next to nothing.
            self._engine = self._base.execution_options(compiled_cache=None)
            # The same lock file as the commit writer's. This is a separate open file, so the
            # two exclude each other even inside one process (flock locks belong to open files).
            self._file_lock = FileWriteLock(writer_lock_path(db_file))
        # Taken on the calling side (a greenlet under gevent), so only one native thread at a
        # time ever uses the single connection above.
        self._turn = threading.Lock()

    def run(self, fn: Callable[Concatenate[Engine, P], R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn(engine, *args, **kwargs)`` as this process's only queued SQLite writer.

        ``fn`` should open its transaction with ``sqlite_immediate`` (as ``write_transaction``
        does) and must not touch gevent objects: on SQLite it runs on a native thread.
        """
        if self._engine is None or self._file_lock is None:
            return fn(self._shared, *args, **kwargs)
        engine, file_lock = self._engine, self._file_lock

        def locked() -> R:
            with file_lock:
                return fn(engine, *args, **kwargs)

        with self._turn:
            return run_blocking(locked)

    def close(self) -> None:
        """Release the private connection."""
        if self._base is not None:
            self._base.dispose()
