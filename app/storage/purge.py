"""The background purge: requests past their bin's retention or beyond its cap are deleted within
seconds, about a hundred per transaction, without holding captures back.

Every process runs a ``PurgeLoop``; one process per deployment purges at a time, the holder of
the ``PurgeLease`` (a ``flock`` next to an SQLite file, a session advisory lock on PostgreSQL),
which passes on when its process exits. Each round (every ``interval`` seconds, at once while
work is left):

- caps: the bins that received requests since the last round (``bins_changed_since``), bins whose
  own limits changed, and a sweep over every bin once per lease (which catches bins that went
  over a lowered cap while idle). Only bins whose span of sequences is wider than their cap are
  counted, and those are trimmed to their newest ``cap`` requests.
- retention of bins with their own: their oldest requests, through the bin's index.
- retention of every other bin: a walk up the sequence from where the last round stopped, which
  stops at the first request too new to go.

Deletes go through ``Storage.write`` (off the event loop on SQLite, queued with the capture
writer on the write lock) and each is followed by a pause twice as long as it took, so the purge
never has the write lock more than about a third of the time: under a load that saturates the
machine it falls behind for a while rather than slowing captures down. Live viewers read "after
the last sequence I sent", which rows vanishing below cannot disturb.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from app.config import Settings
from app.core import lifecycle
from app.core.clock import utcnow
from app.storage import retention
from app.storage.repository import Storage

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# Any fixed number will do; it differs from the bins file's.
_PG_LOCK_KEY = 0x686F6F6B70757267  # "hookpurg"
#: Delete transactions one round may run before it yields to the next (which starts at once).
_ROUND_WRITES = 40
#: Shortest pause after each delete transaction, leaving the write lock to captures.
_MIN_PAUSE = 0.005
#: Bins read per step of the sweep.
_SWEEP_CHUNK = 200


class PurgeLease:
    """Whether this process is the deployment's one purger; ``held()`` takes the lease if free."""

    def __init__(self, engine: Engine, db_file: Path | None) -> None:
        self._engine = engine
        self._path = None if db_file is None else db_file.with_name(db_file.name + "-purge.lock")
        self._postgres = engine.dialect.name == "postgresql"
        self._fd = -1
        self._pid = 0
        self._holding = False
        self._conn: Connection | None = None

    def held(self) -> bool:
        """True when this process holds the lease (taking it now when nobody does)."""
        if self._path is not None:
            return self._held_file(self._path)
        if self._postgres:
            return self._held_advisory()
        return True  # in-memory SQLite: one process

    def _held_file(self, path: Path) -> bool:
        if self._pid != os.getpid():
            # A forked child shares its parent's open file, lock included: open its own.
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._pid = os.getpid()
            self._holding = False
        if not self._holding:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            self._holding = True
        return True

    def _held_advisory(self) -> bool:
        if self._conn is not None:
            try:  # the lock lives as long as the session: is it still there?
                self._conn.exec_driver_sql("SELECT 1")
                self._conn.commit()
                return True
            except sa.exc.SQLAlchemyError:
                self._drop()
        conn = self._engine.connect()
        try:
            got = bool(conn.execute(sa.select(sa.func.pg_try_advisory_lock(_PG_LOCK_KEY))).scalar())
            conn.commit()
        except BaseException:
            conn.close()
            raise
        if got:
            self._conn = conn
        else:
            conn.close()
        return got

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.invalidate()  # never back to the pool still holding the lock
            finally:
                self._conn = None

    def release(self) -> None:
        """Give the lease up (another process takes it at its next round)."""
        if self._path is not None and self._pid == os.getpid() and self._holding:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._holding = False
        self._drop()


def _cutoff(now: datetime, seconds: int) -> datetime | None:
    """``seconds`` before ``now``; None when that is before year 1 (nothing is that old)."""
    try:
        return now - timedelta(seconds=seconds)
    except OverflowError:
        return None


def _own(limits: dict[str, tuple[int | None, int | None]], bin_id: str) -> tuple[int | None, ...]:
    """A bin's own (retention, cap); (None, None) when it follows the server's."""
    return limits.get(bin_id, (None, None))


class PurgeLoop:
    """This process's purge rounds (see the module's description)."""

    def __init__(
        self,
        storage: Storage,
        settings: Settings,
        lease: PurgeLease,
        *,
        interval: float = 1.0,
        on_purged: Callable[[int], None] | None = None,
    ) -> None:
        self._storage = storage
        self._retention = settings.retention_seconds
        self._cap = settings.bin_max_requests
        self._lease = lease
        self._interval = interval
        #: Called with the number of requests each delete removed (e.g. to count them).
        self.on_purged = on_purged
        #: Requests this process has purged since it started.
        self.purged_total = 0
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stopping = False
        self._new_lease()

    def _new_lease(self) -> None:
        # What a purger knows holds only while it holds the lease: another may have worked since.
        self._leader = False
        self._limits: dict[str, tuple[int | None, int | None]] = {}
        self._high_water: int | None = None
        self._sweep_after: str | None = ""
        self._recheck: set[str] = set()
        self._cursor = 0

    def start(self) -> None:
        """Start the rounds in this process (again after a fork); a no-op when running."""
        with self._lock:
            if self._stopping or (self._pid == os.getpid() and self._thread is not None):
                return
            self._pid = os.getpid()
            self._new_lease()
            self._thread = threading.Thread(target=self._run, name="hookbin-purge", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """End the rounds, waiting up to ``timeout`` s for a delete under way, and let go of the
        lease so that another process takes over."""
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread() and thread.is_alive():
            thread.join(timeout)
        self._lease.release()  # a delete still under way is harmless to repeat elsewhere

    def _run(self) -> None:
        while not (self._stopping or lifecycle.draining()):
            more = False
            try:
                more = self.run_round()
            except Exception:  # noqa: BLE001 - the database may be back at the next round
                log.exception("purge: a round failed")
            if not more:
                self._wake.wait(self._interval)
                self._wake.clear()

    # -- one round --------------------------------------------------------------------------------

    def run_round(self) -> bool:
        """Purge what is due now, up to a budget; True when work is left for another round."""
        if not self._lease.held():
            if self._leader:
                self._new_lease()
            return False
        self._leader = True
        self._budget = _ROUND_WRITES
        now = utcnow()
        found = self._storage.read(retention.bins_with_limits)
        limits = {b: (lim.retention_seconds, lim.max_requests) for b, lim in found.items()}
        old = self._limits
        changed = {b for b in limits.keys() | old.keys() if limits.get(b) != old.get(b)}
        if any(_own(old, b)[0] != _own(limits, b)[0] for b in changed):
            self._cursor = 0  # a bin that left its own retention may have rows the walk passed
        self._limits = limits
        self._recheck |= changed

        more = self._caps()
        for bin_id, lim in found.items():
            seconds = lim.retention_seconds
            if seconds and lim.oldest is not None and self._budget > 0:
                cutoff = _cutoff(now, seconds)
                if cutoff is not None and lim.oldest < cutoff:
                    more |= self._drain(retention.expire_bin, bin_id, cutoff)
        if self._retention:
            cutoff = _cutoff(now, self._retention)
            if cutoff is not None:
                more |= self._walk(cutoff, {b for b, (r, _) in limits.items() if r is not None})
        return more

    def _caps(self) -> bool:
        storage = self._storage
        top = storage.high_water()
        if self._high_water is None:
            self._high_water = top  # everything older is the sweep's
        candidates = set(storage.bins_changed_since(self._high_water)) | self._recheck
        self._high_water = top
        if self._sweep_after is not None:
            chunk = storage.read(retention.bins_after, self._sweep_after, _SWEEP_CHUNK)
            candidates.update(chunk)
            self._sweep_after = chunk[-1] if len(chunk) == _SWEEP_CHUNK else None
        self._recheck = set()
        caps = [(b, retention.effective(_own(self._limits, b)[1], self._cap)) for b in candidates]
        ids = [b for b, cap in caps if cap > 0]
        spans: dict[str, tuple[int, int]] = {}
        for i in range(0, len(ids), 500):
            spans.update(storage.read(retention.seq_spans, ids[i : i + 500]))
        for bin_id, cap in retention.over_cap(spans, caps):
            if self._budget <= 0:
                self._recheck.add(bin_id)
                continue
            cut = storage.read(retention.cap_cut, bin_id, cap)
            if cut is not None and self._drain(retention.trim_bin, bin_id, cut):
                self._recheck.add(bin_id)
        return bool(self._recheck) or self._sweep_after is not None

    def _drain(self, fn: Callable[[Engine, str, R], int], bin_id: str, arg: R) -> bool:
        """Run ``fn`` until it deletes less than a batch; True when the budget ran out first."""
        while self._budget > 0:
            if self._write(fn, bin_id, arg) < retention.BATCH:
                return False
        return True

    def _walk(self, cutoff: datetime, skip: set[str]) -> bool:
        while self._budget > 0:
            window = self._write(retention.expire_window, self._cursor, cutoff, skip)
            if window.next_start is None:
                self._cursor = window.start
                return False
            self._cursor = window.next_start
        return True

    def _write(
        self, fn: Callable[Concatenate[Engine, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        started = time.monotonic()
        result = self._storage.write(fn, *args, **kwargs)
        took = time.monotonic() - started
        self._budget -= 1
        deleted = result.deleted if isinstance(result, retention.Window) else int(result)
        if deleted:
            self.purged_total += deleted
            if self.on_purged is not None:
                try:
                    self.on_purged(deleted)
                except Exception:  # noqa: BLE001 - counting must never stop the purge
                    log.exception("purge: the on_purged callback failed")
        time.sleep(max(_MIN_PAUSE, 2 * took))  # cooperative under gevent: captures get the lock
        return result
