"""The per-process auto-forward delivery loop over the database queue (``app.delivery.queue``).

Each worker process runs one loop. It wakes when a capture of this process queued a forward, when
a try of this process ended, when a scheduled retry of this process is due, and at least every
``HOOKBIN_FORWARD_POLL_SECONDS``, which is how it picks up entries queued by other processes or
hosts, retries scheduled by them, and everything left pending by a restart. Each claimed entry is
tried on its own thread (a greenlet under gunicorn's gevent worker), so a slow target of one bin
never holds up another bin, and the capture path only ever sets an event.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import socket
import threading
import time

from app.config import Settings
from app.core import lifecycle
from app.delivery import queue as forwardqueue
from app.delivery.queue import Entry, Outcome
from app.delivery.replay import TargetRefused, record_refusal, replay
from app.ops import logs, metrics
from app.storage.repository import Storage

log = logging.getLogger(__name__)

# A wake-up for a scheduled retry comes this much late, so that the entry is surely due by the
# database's comparison (times are stored with microseconds; clocks are read twice).
_LATE = 0.02


def lease_seconds(replay_timeout_seconds: float) -> float:
    """How long a claimed entry stays leased to the process trying it.

    A try is bounded by the replay timeout per network step (resolve, connect, send, first byte,
    rest of the answer), so three timeouts plus a margin outlast any live try; a lease that
    lapses means its process died, and another one tries again.
    """
    return 3 * replay_timeout_seconds + 10.0


class DeliveryLoop:
    """Claims due queue entries and tries them, at most ``forward_concurrency`` at once."""

    def __init__(self, storage: Storage, settings: Settings) -> None:
        self._storage = storage
        self._settings = settings
        self._delays = settings.forward_retry_delays  # raises at start-up when malformed
        self._poll = max(0.01, settings.forward_poll_seconds)
        self._concurrency = max(1, settings.forward_concurrency)
        self._lease = lease_seconds(settings.replay_timeout_seconds)
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: dict[int, threading.Thread] = {}
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stopping = False
        self._next_due = 0.0  # time.monotonic() of the earliest retry this process scheduled
        self._owner = ""
        self._claims = itertools.count(1)

    @property
    def max_tries(self) -> int:
        """Tries an entry gets before it is given up on: the first plus one per retry delay."""
        return 1 + len(self._delays)

    def ensure_started(self) -> None:
        """Start the loop in this process (again after a fork); cheap when it runs already."""
        if self._stopping:
            return
        # No Thread.is_alive() on this path: the capture path calls it for every request, and
        # under gevent it costs a pure-Python lock. ``_run`` only returns once stopping.
        if self._pid == os.getpid() and self._thread is not None:
            return
        with self._lock:
            if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
                return
            if self._pid != os.getpid():
                # Threads do not survive a fork: whatever the parent had in flight is not ours.
                self._in_flight.clear()
                self._pid = os.getpid()
                host = socket.gethostname()[:24]
                self._owner = f"{host}:{self._pid}:{secrets.token_hex(4)}"
            self._thread = threading.Thread(target=self._run, name="hookbin-forward", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """Look for due entries now (after a local capture or a "retry now")."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Claim nothing more and wait up to ``timeout`` seconds for tries in flight.

        A try still running afterwards keeps its lease, which lapses; another process then tries
        again (so a target may see that request twice, never zero times).
        """
        self._stopping = True
        self._wake.set()
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = [t for t in (self._thread, *self._in_flight.values()) if t is not None]
        for thread in threads:
            if thread is not threading.current_thread() and thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))

    def in_flight(self) -> int:
        """Tries this process is making right now."""
        return len(self._in_flight)

    # -- the loop ---------------------------------------------------------------------------------

    def _should_stop(self) -> bool:
        return self._stopping or lifecycle.draining()

    def _run(self) -> None:
        while not self._should_stop():
            # Cleared before looking, so a wake-up that arrives meanwhile is not lost.
            self._wake.clear()
            if self._next_due and time.monotonic() >= self._next_due:
                self._next_due = 0.0
            try:
                self._claim()
            except Exception:  # noqa: BLE001 - the database may be back at the next poll
                log.exception("auto-forward: looking for due deliveries failed")
            self._wake.wait(self._wait_seconds())

    def _wait_seconds(self) -> float:
        wait = self._poll
        if self._next_due:
            wait = min(wait, max(0.0, self._next_due - time.monotonic()))
        return wait

    def _claim(self) -> None:
        room = self._concurrency - len(self._in_flight)
        if room <= 0:
            return
        # A plain read first: an idle process must not queue for the write lock every poll.
        if not self._storage.read(forwardqueue.due_heads, limit=room):
            return
        owner = f"{self._owner}:{next(self._claims)}"
        entries = self._storage.write(
            forwardqueue.claim_due, owner, lease_seconds=self._lease, limit=room
        )
        for entry in entries:
            thread = threading.Thread(
                target=self._deliver, args=(entry,), name="hookbin-forward-try", daemon=True
            )
            with self._lock:
                self._in_flight[entry.id] = thread
            thread.start()

    def _deliver(self, entry: Entry) -> None:
        """Make one try of ``entry``, store it as an attempt and settle the entry."""
        outcome: Outcome | None = None
        try:
            with logs.bind(bin_id=entry.bin_id, request_id=entry.request_id):
                outcome = self._try_logged(entry)
        finally:
            with self._lock:
                self._in_flight.pop(entry.id, None)
            if outcome is not None and outcome.retry_in is not None:
                self._schedule(outcome.retry_in)
            # The next entry of this bin may go now.
            self._wake.set()

    def _try_logged(self, entry: Entry) -> Outcome | None:
        try:
            return self._try(entry)
        except Exception as exc:  # noqa: BLE001 - count it as a failed try, keep delivering
            log.exception("auto-forward of request %s failed", entry.request_id)
            metrics.count_forward_attempt(metrics.ERROR)
            try:
                return self._settle(entry, delivered=False, error=f"internal error: {exc}")
            except Exception:  # noqa: BLE001 - the lease lapses and the entry is tried again
                log.exception("auto-forward: could not settle request %s", entry.request_id)
                return None

    def _try(self, entry: Entry) -> Outcome | None:
        storage, settings = self._storage, self._settings
        item = storage.get_request(entry.request_id)
        if item is None:
            return None  # deleted: its queue entry went with it
        try_no = entry.tries + 1
        try:
            attempt = replay(
                storage, settings, item, entry.url, kind="forward", queue_id=entry.id, try_no=try_no
            )
        except TargetRefused as exc:
            # No retry can change a policy decision: give up at once, and say why.
            record_refusal(
                storage, item, entry.url, "forward", str(exc), queue_id=entry.id, try_no=try_no
            )
            metrics.count_forward_attempt(metrics.REFUSED)
            return self._settle(entry, delivered=False, error=f"refused: {exc}", give_up=True)
        status = attempt["status"]
        delivered = forwardqueue.is_success(status)
        error = None
        if not delivered:
            error = attempt["error"] or f"the target answered {status}"
        outcome = self._settle(entry, delivered=delivered, error=error)
        if delivered:
            metrics.count_forward_attempt(metrics.DELIVERED)
        else:
            last = outcome is not None and outcome.state == forwardqueue.FAILED
            metrics.count_forward_attempt(metrics.GAVE_UP if last else metrics.FAILED)
        return outcome

    def _settle(
        self, entry: Entry, *, delivered: bool, error: str | None, give_up: bool = False
    ) -> Outcome | None:
        return self._storage.write(
            forwardqueue.settle,
            entry.id,
            entry.lease_owner,
            delivered=delivered,
            error=error,
            delays=self._delays,
            give_up=give_up,
        )

    def _schedule(self, seconds: float) -> None:
        due = time.monotonic() + seconds + _LATE
        with self._lock:
            if not self._next_due or due < self._next_due:
                self._next_due = due
