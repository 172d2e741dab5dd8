"""The per-process live hub: who is watching which bin, and fetching what is new for them.

News of a bin (from this process's writer or from another process through the notifier) makes
the hub read the rows after the lowest sequence any local viewer of that bin has seen - one query
per bin, however many viewers - and hand each viewer the rows it has not seen yet. That is done at
once by whoever brings the news (``deliver_now``); the hub's own dispatcher handles the rest:
refills of viewers that fell behind, wake-ups for every bin, and the safety-net poll. Sequences
become visible in order (see ``captures.insert_captures``), so "after the last one I sent" is a gap-
and duplicate-free cursor, also across reconnects.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from app.ops import metrics

log = logging.getLogger(__name__)

Item = dict[str, Any]
FetchAfter = Callable[[str, int, int], list[Item]]
LastSeq = Callable[[str], int]
HighWater = Callable[[], int]
ChangedSince = Callable[[int], dict[str, int]]

_FETCH_LIMIT = 500


class Viewer:
    """One live connection watching one bin.

    At most ``max_backlog`` items wait in memory for a viewer. One that reads more slowly than
    requests arrive stops being fed ("lagging") and is refilled from the database once it has
    sent half of what it holds, so a slow or stalled browser costs bounded memory and still
    gets every request, in order, without reconnecting.
    """

    def __init__(
        self,
        bin_id: str,
        max_backlog: int = 2000,
        refill: Callable[[str], None] | None = None,
    ) -> None:
        self.bin_id = bin_id
        self.max_backlog = max(1, max_backlog)
        #: Highest sequence queued for this viewer; None until the starting point is known.
        self.last: int | None = None
        self.closed = False
        #: Its queue was full: the hub skips it until it asks for more.
        self.lagging = False
        self._refill = refill
        # A deque and an event, not queue.Queue: under gevent's monkey-patching a Queue is a
        # pure-Python Condition, and hundreds of idle viewers waking up every second to check
        # their socket showed up in every other viewer's latency.
        self._items: deque[Item] = deque()
        self._ready = threading.Event()

    def offer(self, rows: list[Item]) -> None:
        """Queue the rows this viewer has not seen, as many as fit (hub dispatcher only)."""
        if self.last is None or self.closed or self.lagging:
            return
        items = self._items
        queued = False
        for row in rows:
            if row["seq"] <= self.last:
                continue
            if len(items) >= self.max_backlog:
                self.lagging = True
                break
            items.append(row)
            self.last = row["seq"]
            queued = True
        if queued:
            self._ready.set()

    def queued(self) -> int:
        """How many items wait to be sent."""
        return len(self._items)

    def get(self, timeout: float) -> Item | None:
        """The next item, or None on timeout (one reader per viewer)."""
        items = self.take(timeout, 1)
        return items[0] if items else None

    def take(self, timeout: float, limit: int) -> list[Item]:
        """Up to ``limit`` items, waiting at most ``timeout`` for the first (one reader).

        A viewer that fell behind gets what queued up meanwhile in one go, so the stream can
        write it with one call instead of one per request.
        """
        items = self._items
        if not items:
            self._ready.clear()
            # Checked again after clearing: an item offered in between has set the event anew.
            if not items:
                self._ready.wait(timeout)
        taken = [items.popleft() for _ in range(min(limit, len(items)))]
        if self.lagging and len(items) <= self.max_backlog // 2:
            # Half drained (or idle, which also covers a refill lost to a race): read on from
            # the database where this viewer's queue ends.
            self.lagging = False
            if self._refill is not None:
                self._refill(self.bin_id)
        return taken


class Hub:
    """Fans new requests out to this process's viewers."""

    def __init__(
        self,
        fetch_after: FetchAfter,
        last_seq: LastSeq,
        poll_seconds: float,
        *,
        high_water: HighWater,
        changed_since: ChangedSince,
        max_backlog: int = 2000,
    ) -> None:
        self._max_backlog = max_backlog
        self._fetch_after = fetch_after
        self._last_seq = last_seq
        self._poll = poll_seconds
        self._high_water = high_water
        self._changed_since = changed_since
        #: Every request up to this sequence has been seen by the safety-net poll.
        self._polled: int | None = None
        self._viewers: dict[str, set[Viewer]] = {}
        self._dirty: set[str] = set()
        # A lock and an event rather than a Condition, which is pure Python under gevent: every
        # commit of every process reaches the hub.
        self._lock = threading.Lock()
        # One delivery at a time: two must not offer to the same viewer at once (real threads,
        # outside gevent; under gevent a delivery does not yield, so this is never contended).
        self._delivering = threading.Lock()
        self._wakeup = threading.Event()
        self._thread: threading.Thread | None = None

    # -- subscriptions ----------------------------------------------------------------------------

    def subscribe(self, bin_id: str, after_seq: int | None) -> Viewer:
        """Watch ``bin_id``: from ``after_seq`` when given, otherwise from now on."""
        viewer = Viewer(bin_id, self._max_backlog, refill=self.wake)
        with self._lock:
            self._ensure_dispatcher()
            self._viewers.setdefault(bin_id, set()).add(viewer)
        metrics.viewer_opened()
        # Registered before the starting point is read, so a request committed in between is
        # picked up by the wake-up below rather than lost.
        start = after_seq if after_seq is not None else self._last_seq(bin_id)
        with self._lock:
            viewer.last = start
        self.wake(bin_id)
        return viewer

    def unsubscribe(self, viewer: Viewer) -> None:
        """Stop feeding ``viewer``."""
        with self._lock:
            if viewer.closed:
                return
            viewer.closed = True
            group = self._viewers.get(viewer.bin_id)
            if group is not None:
                group.discard(viewer)
                if not group:
                    del self._viewers[viewer.bin_id]
        metrics.viewer_closed()

    def viewer_count(self) -> int:
        """How many viewers this process feeds."""
        with self._lock:
            return sum(len(v) for v in self._viewers.values())

    # -- wake-ups ---------------------------------------------------------------------------------

    def wake(self, bin_id: str | None) -> None:
        """Something new may be in ``bin_id`` (None: in any bin)."""
        with self._lock:
            if bin_id is None:
                self._dirty.update(self._viewers)
            elif bin_id in self._viewers:
                self._dirty.add(bin_id)
            else:
                return
        self._wakeup.set()

    def deliver_now(self, bin_ids: Iterable[str | None]) -> None:
        """Feed this process's viewers of ``bin_ids`` in the calling thread (None: any bin).

        Called with the news of new requests: by the capture writer after a commit, before it
        releases the batch, and by the notifier's listener. Done here rather than by the
        dispatcher, so that frames need not wait for the dispatcher's turn on the event loop
        and the viewers are woken before the batch's own answers. A bin nobody here watches
        costs a set lookup.
        """
        for bin_id in bin_ids:
            if bin_id is None:
                self.wake(None)
                continue
            with self._lock:
                if bin_id not in self._viewers:
                    continue
                # Whatever the dispatcher was to do for this bin, this does now.
                self._dirty.discard(bin_id)
            try:
                self._deliver(bin_id)
            except Exception:  # noqa: BLE001 - the dispatcher tries again
                log.exception("live update for bin %s failed", bin_id)
                self.wake(bin_id)

    def _ensure_dispatcher(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._dispatch, name="hookbin-hub", daemon=True)
            self._thread.start()

    def _dispatch(self) -> None:
        try:
            self._polled = self._high_water()
        except Exception:  # noqa: BLE001 - the first poll tries again
            log.exception("live hub could not read the newest sequence")
        while True:
            # Cleared before the dirty set is taken: a wake-up after this point sets it again.
            self._wakeup.clear()
            with self._lock:
                dirty, self._dirty = self._dirty, set()
            if not dirty:
                if not self._wakeup.wait(self._poll):
                    # Quiet for a whole poll period: catch anything a lost notification hid.
                    self._safety_poll()
                continue
            for bin_id in dirty:
                try:
                    self._deliver(bin_id)
                except Exception:  # noqa: BLE001 - one bad fetch must not stop the hub
                    log.exception("live update for bin %s failed", bin_id)

    def _safety_poll(self) -> None:
        # One query for all bins, not one per watched bin: with hundreds of viewers, a query per
        # bin held the event loop long enough to show up in every viewer's latency.
        try:
            if self._polled is None:
                self._polled = self._high_water()
            changed = self._changed_since(self._polled)
        except Exception:  # noqa: BLE001 - the next poll tries again
            log.exception("live safety-net poll failed")
            return
        if changed:
            # Sequences become visible in order, so nothing at or below the highest one seen can
            # still appear later.
            self._polled = max(self._polled, *changed.values())
            with self._lock:
                self._dirty.update(b for b in changed if b in self._viewers)

    def _deliver(self, bin_id: str) -> None:
        with self._delivering:
            self._deliver_locked(bin_id)

    def _deliver_locked(self, bin_id: str) -> None:
        with self._lock:
            viewers = [
                v for v in self._viewers.get(bin_id, ()) if v.last is not None and not v.lagging
            ]
        while viewers:
            low = min(v.last for v in viewers if v.last is not None)
            rows = self._fetch_after(bin_id, low, _FETCH_LIMIT)
            if not rows:
                return
            for viewer in viewers:
                viewer.offer(rows)
            if len(rows) < _FETCH_LIMIT:
                return
            viewers = [v for v in viewers if not v.lagging]
