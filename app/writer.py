"""Group commit: many captures, one transaction, one flush to disk.

Each capture hands its row to the worker's ``CommitBatcher`` and waits. A single writer thread (a
greenlet under gunicorn's gevent worker) takes everything that queued up while the previous commit
was running and commits it in one transaction. A capture is acknowledged only once the commit that
holds it is durable, so a crash never loses an acknowledged request, yet a busy worker pays one
flush per batch rather than one per request.

When the commit itself does not flush (``sync`` is given: see ``app.walsync``), a second thread
runs ``sync`` after commits and releases their callers once it returns. The writer meanwhile
commits the next batch, and one flush covers every batch committed before it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from app.blocking import gevent_patched

log = logging.getLogger(__name__)

Row = TypeVar("Row")
Result = TypeVar("Result")


class _Pending(Generic[Row, Result]):
    __slots__ = ("row", "done", "result", "error")

    def __init__(self, row: Row) -> None:
        self.row = row
        self.done = threading.Event()
        self.result: Result | None = None
        self.error: BaseException | None = None


_Batch = list[_Pending[Row, Result]]


class CommitBatcher(Generic[Row, Result]):
    """Commit rows in batches; ``submit`` blocks until the caller's row is durable.

    ``commit`` stores a batch and returns one result per row. ``sync``, when given, makes every
    commit so far durable (it may block; hand it to a native thread). ``published`` is called
    with each durable batch and its results before the callers are released (live updates).
    ``linger_seconds`` makes every batch wait that long for more rows; ``idle_max_seconds``
    (gevent only) lets a batch wait up to that long for the event loop to run out of other work.

    Only deques and events are shared between callers and the writer: both are cheap under
    gevent's monkey-patching, where a ``threading.Condition`` is a pure-Python lock dance that
    cost more per capture than the commit itself.
    """

    def __init__(
        self,
        commit: Callable[[Sequence[Row]], list[Result]],
        *,
        sync: Callable[[], None] | None = None,
        published: Callable[[Sequence[Row], list[Result]], None] | None = None,
        batch_max: int = 256,
        linger_seconds: float = 0.0,
        idle_max_seconds: float = 0.0,
    ) -> None:
        self._commit = commit
        self._sync = sync
        self._published = published
        self._batch_max = max(1, batch_max)
        self._linger = linger_seconds
        self._idle_max = idle_max_seconds
        self._idle: Any = None  # this process's gevent idle watcher, made by the writer
        self._idle_pid = 0
        self._queue: deque[_Pending[Row, Result]] = deque()
        self._work = threading.Event()
        self._unsynced: deque[tuple[_Batch, list[Result]]] = deque()
        self._sync_work = threading.Event()
        self._start_lock = threading.Lock()
        self._writer_pid = 0
        self.batches = 0
        self.rows = 0
        self.syncs = 0

    def submit(self, row: Row) -> Result:
        """Queue ``row``, wait until the commit that stores it is durable, return its result.

        Raises whatever the commit (or the flush after it) raised; the row was then not stored,
        or not surely.
        """
        pending: _Pending[Row, Result] = _Pending(row)
        # A pid check rather than Thread.is_alive(): under gevent's monkey-patching that takes a
        # pure-Python lock, a measurable share of a capture. The writer threads never return
        # (see ``_run``), so only a fork leaves a process without them.
        if self._writer_pid != os.getpid():
            self._start_writer()
        self._queue.append(pending)
        self._work.set()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.result  # type: ignore[return-value]

    def _start_writer(self) -> None:
        # Started lazily, and again after a fork: gunicorn forks workers after the app is built,
        # and threads do not survive a fork.
        with self._start_lock:
            if self._writer_pid != os.getpid():
                self._unsynced.clear()
                threading.Thread(target=self._run, name="hookbin-writer", daemon=True).start()
                if self._sync is not None:
                    threading.Thread(
                        target=self._sync_run, name="hookbin-sync", daemon=True
                    ).start()
                self._writer_pid = os.getpid()

    def _take_batch(self) -> _Batch:
        while not self._queue:
            self._work.wait()
            # Cleared before the queue is read: a row appended after this point sets the event
            # again, so no wake-up is lost.
            self._work.clear()
        if self._linger > 0:
            time.sleep(self._linger)
        if len(self._queue) < self._batch_max:
            self._until_loop_idle()

        queue = self._queue
        return [queue.popleft() for _ in range(min(len(queue), self._batch_max))]

    def _until_loop_idle(self) -> None:
        """Under gevent: wait until the event loop has nothing else to run, at most ``idle_max``.

        Requests whose bytes have arrived are still being read and handled by other greenlets;
        once all of them are waiting for a commit, and nothing new has come in, the loop is idle
        and they all join this batch. On an idle server that is at once; under load it makes
        batches of every request in flight, where committing as soon as the writer got its turn
        took a third of them. A commit costs about the same for 5 rows as for 15 (BENCHMARKS.md).
        """
        if self._idle_max <= 0 or not gevent_patched():
            return
        if self._idle is None or self._idle_pid != os.getpid():
            import gevent

            self._idle = gevent.get_hub().loop.idle()
            self._idle_pid = os.getpid()
        idle = threading.Event()
        self._idle.start(idle.set)
        try:
            idle.wait(self._idle_max)
        finally:
            self._idle.stop()

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            try:
                results = self._commit([p.row for p in batch])
            except Exception as exc:  # noqa: BLE001 - every waiter must hear about it
                log.exception("commit of %d captured requests failed", len(batch))
                self._fail(batch, exc)
                continue
            self.batches += 1
            self.rows += len(batch)
            if self._sync is None:
                self._release(batch, results)
            else:
                self._unsynced.append((batch, results))
                self._sync_work.set()

    def _sync_run(self) -> None:
        while True:
            while not self._unsynced:
                self._sync_work.wait()
                self._sync_work.clear()
            # Everything committed up to now; commits that land during the flush wait for the
            # next one.
            done = [self._unsynced.popleft() for _ in range(len(self._unsynced))]
            try:
                self._sync()  # type: ignore[misc]
            except Exception as exc:  # noqa: BLE001 - not known durable: never acknowledge
                log.exception("flushing %d committed batches to disk failed", len(done))
                for batch, _ in done:
                    self._fail(batch, exc)
                continue
            self.syncs += 1
            for batch, results in done:
                self._release(batch, results)

    def _release(self, batch: _Batch, results: list[Result]) -> None:
        if self._published is not None:
            try:
                self._published([p.row for p in batch], results)
            except Exception:  # noqa: BLE001 - the rows are stored; viewers catch up by polling
                log.exception("publishing %d captured requests failed", len(batch))
        for p, result in zip(batch, results, strict=True):
            p.result = result
            p.done.set()

    @staticmethod
    def _fail(batch: _Batch, exc: BaseException) -> None:
        for p in batch:
            p.error = exc
            p.done.set()
