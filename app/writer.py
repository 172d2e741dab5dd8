"""Group commit: many captures, one transaction, one fsync.

Each capture hands its row to the worker's ``CommitBatcher`` and waits. A single writer thread (a
greenlet under gunicorn's gevent worker) takes everything that queued up while the previous commit
was running and commits it in one transaction. A capture is acknowledged only after the commit that
holds it returned, so a crash never loses an acknowledged request, yet a busy worker pays one fsync
per batch rather than one per request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

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


class CommitBatcher(Generic[Row, Result]):
    """Commit rows in batches; ``submit`` blocks until the caller's row is durable.

    Only a deque and events are shared between callers and the writer: both are cheap under
    gevent's monkey-patching, where a ``threading.Condition`` is a pure-Python lock dance that
    cost more per capture than the commit itself.
    """

    def __init__(
        self,
        commit: Callable[[Sequence[Row]], list[Result]],
        *,
        batch_max: int = 256,
        linger_seconds: float = 0.0,
    ) -> None:
        self._commit = commit
        self._batch_max = max(1, batch_max)
        self._linger = linger_seconds
        self._queue: deque[_Pending[Row, Result]] = deque()
        self._work = threading.Event()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.rows = 0

    def submit(self, row: Row) -> Result:
        """Queue ``row``, wait for the commit that stores it, return its result.

        Raises whatever the commit raised, in which case the row was not stored.
        """
        pending: _Pending[Row, Result] = _Pending(row)
        if self._thread is None or not self._thread.is_alive():
            self._start_writer()
        self._queue.append(pending)
        self._work.set()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.result  # type: ignore[return-value]

    def _start_writer(self) -> None:
        # Started lazily, and again after a fork: gunicorn forks workers after the app is built,
        # and threads do not survive a fork (is_alive() is then False).
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="hookbin-writer", daemon=True
                )
                self._thread.start()

    def _take_batch(self) -> list[_Pending[Row, Result]]:
        while not self._queue:
            self._work.wait()
            # Cleared before the queue is read: a row appended after this point sets the event
            # again, so no wake-up is lost.
            self._work.clear()
        if self._linger > 0:
            time.sleep(self._linger)

        queue = self._queue
        return [queue.popleft() for _ in range(min(len(queue), self._batch_max))]

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            try:
                results = self._commit([p.row for p in batch])
            except Exception as exc:  # noqa: BLE001 - every waiter must hear about it
                log.exception("commit of %d captured requests failed", len(batch))
                for p in batch:
                    p.error = exc
            else:
                self.batches += 1
                self.rows += len(batch)
                for p, result in zip(batch, results, strict=True):
                    p.result = result
            for p in batch:
                p.done.set()
