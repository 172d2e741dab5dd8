"""A short-lived, per-process cache of bins, so the capture path rarely asks the database.

Only bins that exist are cached, and only for a few seconds: a deleted bin is caught for certain
by the capture transaction itself (it re-checks the bin), and a new bin is never wrongly refused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

Bin = dict[str, Any]


class BinCache:
    """Positive-only TTL cache in front of a bin lookup."""

    def __init__(self, lookup: Callable[[str], Bin | None], ttl_seconds: float = 2.0) -> None:
        self._lookup = lookup
        self._ttl = ttl_seconds
        self._entries: dict[str, tuple[float, Bin]] = {}
        self._lock = threading.Lock()

    def get(self, bin_id: str) -> Bin | None:
        """The bin, from the cache when fresh, else from the lookup."""
        now = time.monotonic()
        entry = self._entries.get(bin_id)
        if entry is not None and now - entry[0] < self._ttl:
            return entry[1]
        found = self._lookup(bin_id)
        with self._lock:
            if found is None:
                self._entries.pop(bin_id, None)
            else:
                if len(self._entries) > 10_000:
                    self._entries.clear()
                self._entries[bin_id] = (now, found)
        return found

    def forget(self, bin_id: str) -> None:
        """Drop a bin after this process changed or deleted it."""
        with self._lock:
            self._entries.pop(bin_id, None)
