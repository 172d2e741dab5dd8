"""Auto-forward: replay each new capture of a forwarding bin in the background.

Captures are handed over after they are committed and answered, so a slow or dead target never
delays the sender. One delivery thread per process sends in capture order.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

Deliver = Callable[[str, str], None]


class Forwarder:
    """A queue of (request id, target URL) pairs and the thread that delivers them in order."""

    def __init__(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def enqueue(self, request_id: str, url: str) -> None:
        """Schedule a forward of ``request_id`` to ``url``."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="hookbin-forward", daemon=True
                )
                self._thread.start()
        self._queue.put((request_id, url))

    def _run(self) -> None:
        while True:
            request_id, url = self._queue.get()
            try:
                self._deliver(request_id, url)
            except Exception:  # noqa: BLE001 - keep delivering the others
                log.exception("forward of %s to %s failed", request_id, url)
