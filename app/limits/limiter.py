"""A rate limit shared by every process: fixed windows, counted locally, added up in chunks.

Each process counts the hits it admits per key and window by itself, and adds them to the
shared count (``counts.add_hits``, one upsert returning the window's total) together with the
hit that makes ``Rate.chunk`` of them, or with any hit that would reach the limit by its own
reckoning (the last total it saw plus its unshared hits). That hit is decided on the fresh
total. So nothing is refused before the limit's worth of hits was admitted by all processes
together, and the count overshoots only by hits not shared yet when the window filled: fewer
than a chunk per process, and as many again admitted while a process's last share was in flight
(docs/limits.md states the bound). A key found full stays full in this process
until its window ends, so refused hits cost no database work at all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from app.limits.counts import STALE_SECONDS
from app.limits.rates import Rate

log = logging.getLogger(__name__)

#: ``sync(scope, key, window, hits, sweep_before)`` -> the window's shared total after adding.
Sync = Callable[[str, str, int, int, "int | None"], int]

# Entries kept per process before those of past windows are dropped.
_MAX_KEYS = 10_000
_SWEEP_EVERY_SECONDS = 60.0


@dataclass
class _Count:
    """One key's count in this process, for the window that started at ``window``."""

    window: int
    seen: int = 0  # the shared total at this process's last sync
    unshared: int = 0  # hits admitted here since then
    full: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class Limiter:
    """One rate limit (``scope``: "bin", "source" or "create") over keys such as a bin id."""

    def __init__(
        self, scope: str, rate: Rate, sync: Sync, clock: Callable[[], float] = time.time
    ) -> None:
        self.scope = scope
        self.rate = rate
        self._sync = sync
        self._clock = clock
        self._counts: dict[str, _Count] = {}
        self._next_sweep = 0.0

    def hit(self, key: str) -> int | None:
        """Count one hit on ``key``: None when it is admitted, else the seconds until the
        window frees (for ``Retry-After``)."""
        while True:
            now = self._clock()
            count = self._current(key, self.rate.window(now))
            if count.full:
                return self.rate.retry_after(now)
            if self._far_from_limit(count):
                # No lock: a gevent worker switches only at I/O, and another hit's share in
                # flight keeps what is counted here meanwhile.
                count.unshared += 1
                return None
            with count.lock:  # one share at a time per key in this process
                now = self._clock()
                if count.window != self.rate.window(now):
                    continue  # the window ended while this hit waited: count it in the next
                if count.full:
                    return self.rate.retry_after(now)
                if self._far_from_limit(count):  # the share it waited for made room
                    count.unshared += 1
                    return None
                return self._share(key, count, now)

    def _far_from_limit(self, count: _Count) -> bool:
        """True while one more hit neither completes a chunk nor reaches the limit by this
        process's reckoning."""
        return (
            count.unshared + 1 < self.rate.chunk
            and count.seen + count.unshared + 1 < self.rate.count
        )

    def _current(self, key: str, window: int) -> _Count:
        count = self._counts.get(key)
        if count is None or count.window < window:
            if count is None and len(self._counts) >= _MAX_KEYS:
                self._counts = {k: c for k, c in self._counts.items() if c.window >= window}
                if len(self._counts) >= _MAX_KEYS:  # a flood of distinct keys: start afresh
                    self._counts = {}
            # Hits not yet shared belong to a window that is over: nobody needs them.
            count = self._counts[key] = _Count(window)
        return count

    def _share(self, key: str, count: _Count, now: float) -> int | None:
        """Add the unshared hits and this one to the shared count, and decide this one on the
        new total. A count that cannot be written refuses nobody: its hits stay unshared."""
        sending = count.unshared + 1
        count.unshared = 0  # hits admitted while the write is in flight count from zero
        sweep = None
        if now >= self._next_sweep:
            self._next_sweep = now + _SWEEP_EVERY_SECONDS
            sweep = int(now) - STALE_SECONDS
        try:
            total = self._sync(self.scope, key, count.window, sending, sweep)
        except Exception:  # noqa: BLE001 - a limit that cannot be counted refuses nobody
            log.exception("could not update the %s rate count of %s", self.scope, key)
            count.unshared += sending
            if sweep is not None:
                self._next_sweep = 0.0
            return None
        count.seen = max(count.seen, total)
        if total > self.rate.count:
            count.full = True  # the total only grows until the window ends
            return self.rate.retry_after(now)
        return None
