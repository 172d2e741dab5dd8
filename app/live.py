"""The per-process live hub: who is watching which bin, and fetching what is new for them.

A wake-up for a bin (from this process's writer or from another process through the notifier)
makes the hub read the rows after the lowest sequence any local viewer of that bin has seen - one
query per bin, however many viewers - and hand each viewer the rows it has not seen yet. Sequences
become visible in order (see ``store.insert_captures``), so "after the last one I sent" is a gap-
and duplicate-free cursor, also across reconnects.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Item = dict[str, Any]
FetchAfter = Callable[[str, int, int], list[Item]]
LastSeq = Callable[[str], int]

_FETCH_LIMIT = 500
#: Items a viewer may have queued and unsent before it is dropped; it reconnects with ``after``.
_MAX_BACKLOG = 2000


class Viewer:
    """One live connection watching one bin."""

    def __init__(self, bin_id: str) -> None:
        self.bin_id = bin_id
        #: Highest sequence handed to this viewer; None until the starting point is known.
        self.last: int | None = None
        self.closed = False
        self._queue: queue.Queue[Item | None] = queue.Queue()

    def offer(self, rows: list[Item]) -> None:
        """Queue the rows this viewer has not seen (called by the hub's dispatcher only)."""
        if self.last is None or self.closed:
            return
        for row in rows:
            if row["seq"] > self.last:
                self._queue.put(row)
                self.last = row["seq"]
        if self._queue.qsize() > _MAX_BACKLOG:
            log.warning("viewer of %s fell %d items behind; dropping it", self.bin_id, _MAX_BACKLOG)
            self.kick()

    def kick(self) -> None:
        """End this viewer's stream (it may reconnect and resume)."""
        self.closed = True
        self._queue.put(None)

    def get(self, timeout: float) -> Item | None:
        """The next item, or None on timeout or when the viewer was kicked."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None


class Hub:
    """Fans new requests out to this process's viewers."""

    def __init__(self, fetch_after: FetchAfter, last_seq: LastSeq, poll_seconds: float) -> None:
        self._fetch_after = fetch_after
        self._last_seq = last_seq
        self._poll = poll_seconds
        self._viewers: dict[str, set[Viewer]] = {}
        self._dirty: set[str] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    # -- subscriptions ----------------------------------------------------------------------------

    def subscribe(self, bin_id: str, after_seq: int | None) -> Viewer:
        """Watch ``bin_id``: from ``after_seq`` when given, otherwise from now on."""
        viewer = Viewer(bin_id)
        with self._cond:
            self._ensure_dispatcher()
            self._viewers.setdefault(bin_id, set()).add(viewer)
        # Registered before the starting point is read, so a request committed in between is
        # picked up by the wake-up below rather than lost.
        start = after_seq if after_seq is not None else self._last_seq(bin_id)
        with self._cond:
            viewer.last = start
        self.wake(bin_id)
        return viewer

    def unsubscribe(self, viewer: Viewer) -> None:
        """Stop feeding ``viewer``."""
        viewer.closed = True
        with self._cond:
            group = self._viewers.get(viewer.bin_id)
            if group is not None:
                group.discard(viewer)
                if not group:
                    del self._viewers[viewer.bin_id]

    def viewer_count(self) -> int:
        """How many viewers this process feeds."""
        with self._cond:
            return sum(len(v) for v in self._viewers.values())

    # -- wake-ups ---------------------------------------------------------------------------------

    def wake(self, bin_id: str | None) -> None:
        """Something new may be in ``bin_id`` (None: in any bin)."""
        with self._cond:
            if bin_id is None:
                self._dirty.update(self._viewers)
            elif bin_id in self._viewers:
                self._dirty.add(bin_id)
            else:
                return
            self._cond.notify()

    def _ensure_dispatcher(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._dispatch, name="hookbin-hub", daemon=True)
            self._thread.start()

    def _dispatch(self) -> None:
        while True:
            with self._cond:
                if not self._dirty:
                    self._cond.wait(timeout=self._poll)
                if not self._dirty:
                    # Quiet for a whole poll period: re-check every watched bin anyway.
                    self._dirty.update(self._viewers)
                dirty, self._dirty = self._dirty, set()
            for bin_id in dirty:
                try:
                    self._deliver(bin_id)
                except Exception:  # noqa: BLE001 - one bad fetch must not stop the hub
                    log.exception("live update for bin %s failed", bin_id)

    def _deliver(self, bin_id: str) -> None:
        with self._cond:
            viewers = [v for v in self._viewers.get(bin_id, ()) if v.last is not None]
        if not viewers:
            return
        low = min(v.last for v in viewers if v.last is not None)
        while True:
            rows = self._fetch_after(bin_id, low, _FETCH_LIMIT)
            if not rows:
                return
            for viewer in viewers:
                viewer.offer(rows)
            if len(rows) < _FETCH_LIMIT:
                return
            low = rows[-1]["seq"]
