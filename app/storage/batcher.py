"""Group commit: many captures, one transaction, one flush to disk.

Each capture hands its row to the worker's ``CommitBatcher`` and waits. There is no writer
thread: the first capture to arrive while no commit is under way leads. It lets the other
requests the worker is already handling join (see ``_until_loop_idle``), commits everything
queued in one transaction, flushes it to disk when the commit itself does not (``sync``, see
``walsync``), and releases every caller of the batch. Captures that arrived meanwhile wait
for the next batch, which the oldest of them leads. A capture is acknowledged only once the
commit that holds it is durable, so a crash never loses an acknowledged request, yet a busy
worker pays one commit and one flush per batch rather than per request.

No writer thread: under gevent a writer would be one more greenlet waiting for its turn on the
event loop behind every ready request handler; the leader is a greenlet that is already running.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from app.core.blocking import gevent_patched

log = logging.getLogger(__name__)

Row = TypeVar("Row")
Result = TypeVar("Result")


class _Pending(Generic[Row, Result]):
    __slots__ = ("row", "wake", "settled", "leads", "result", "error")

    def __init__(self, row: Row) -> None:
        self.row = row
        #: Set once the row is settled, or when its caller is to lead the next batch.
        self.wake = threading.Event()
        self.settled = False
        self.leads = False
        self.result: Result | None = None
        self.error: BaseException | None = None


_Batch = list[_Pending[Row, Result]]


class CommitBatcher(Generic[Row, Result]):
    """Commit rows in batches; ``submit`` blocks until the caller's row is durable.

    ``commit`` stores a batch and returns one result per row. ``sync``, when given, makes every
    commit so far durable; it runs after each commit. ``published`` is called with each durable
    batch and its results before the callers are released (live updates). ``linger_seconds``
    makes every batch wait that long for more rows; ``idle_max_seconds`` (gevent only) lets a
    batch wait up to that long for the event loop to run out of other work.

    A lock guards the queue and who leads; events wake the callers. Under gevent's patching
    both are cheap, where a ``threading.Condition`` is a pure-Python dance that once cost more
    per capture than the commit itself.
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
        self._idle: Any = None  # this process's gevent idle watcher
        self._idle_pid = 0
        self._queue: deque[_Pending[Row, Result]] = deque()
        self._lock = threading.Lock()
        self._leading = False
        self._pid = os.getpid()
        self.batches = 0
        self.rows = 0
        self.syncs = 0

    def submit(self, row: Row) -> Result:
        """Queue ``row``, wait until the commit that stores it is durable, return its result.

        Raises whatever the commit (or the flush after it) raised; the row was then not stored,
        or not surely.
        """
        pending: _Pending[Row, Result] = _Pending(row)
        with self._lock:
            if self._pid != os.getpid():
                # A forked child: whatever its parent had under way is not its business.
                self._pid, self._queue, self._leading = os.getpid(), deque(), False
            self._queue.append(pending)
            pending.leads = not self._leading
            self._leading = True
        while not pending.settled:
            if pending.leads:
                pending.leads = False
                self._lead(pending)
            else:
                pending.wake.wait()
                pending.wake.clear()
        if pending.error is not None:
            raise pending.error
        return pending.result  # type: ignore[return-value]

    def _lead(self, own: _Pending[Row, Result]) -> None:
        """Commit batches until ``own`` is settled, then hand the lead to the oldest waiter."""
        batch: _Batch = []
        try:
            while True:
                self._gather()
                with self._lock:
                    queue = self._queue
                    batch = [queue.popleft() for _ in range(min(len(queue), self._batch_max))]
                self._store(batch)
                with self._lock:
                    if not self._queue:
                        self._leading = False
                        return
                    if own.settled:
                        self._hand_over()
                        return
        except BaseException as exc:
            # The leading greenlet was killed (or worse) mid-batch: its batch is not known to
            # be stored, and the others must not wait for a leader that is gone.
            self._fail([p for p in batch if not p.settled], exc)
            with self._lock:
                if self._queue:
                    self._hand_over()
                else:
                    self._leading = False
            raise

    def _hand_over(self) -> None:
        # Under the lock: the oldest waiter leads the next batch.
        successor = self._queue[0]
        successor.leads = True
        successor.wake.set()

    def _gather(self) -> None:
        if self._linger > 0:
            time.sleep(self._linger)
        if len(self._queue) < self._batch_max:
            self._until_loop_idle()

    def _until_loop_idle(self) -> None:
        """Under gevent: wait until the event loop has nothing else to run, at most ``idle_max``.

        Requests whose bytes have arrived are still being read and handled by other greenlets;
        once all of them are waiting for a commit, and nothing new has come in, the loop is idle
        and they all join this batch. On an idle server that is at once; under load it makes
        batches of every request in flight, and a commit costs about the same for 5 rows as for 15.
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

    def _store(self, batch: _Batch) -> None:
        try:
            results = self._commit([p.row for p in batch])
        except Exception as exc:  # noqa: BLE001 - every waiter must hear about it
            log.exception("commit of %d captured requests failed", len(batch))
            self._fail(batch, exc)
            return
        self.batches += 1
        self.rows += len(batch)
        if self._sync is not None:
            try:
                self._sync()
            except Exception as exc:  # noqa: BLE001 - not known durable: never acknowledge
                log.exception("flushing %d committed captures to disk failed", len(batch))
                self._fail(batch, exc)
                return
            self.syncs += 1
        self._release(batch, results)

    def _release(self, batch: _Batch, results: list[Result]) -> None:
        if self._published is not None:
            try:
                self._published([p.row for p in batch], results)
            except Exception:  # noqa: BLE001 - the rows are stored; viewers catch up by polling
                log.exception("publishing %d captured requests failed", len(batch))
        for p, result in zip(batch, results, strict=True):
            p.result = result
            p.settled = True
            p.wake.set()

    @staticmethod
    def _fail(batch: _Batch, exc: BaseException) -> None:
        for p in batch:
            p.error = exc
            p.settled = True
            p.wake.set()
