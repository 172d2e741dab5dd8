"""PostgreSQL driver: ``pg_notify`` in the capture transaction, ``LISTEN`` in every process."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

import psycopg
from sqlalchemy.engine import make_url

from app.live.pubsub import WakeCallback

log = logging.getLogger(__name__)

CHANNEL = "hookbin_requests"

# A database host that vanishes without closing the connection (a network cut, a VM gone) would
# leave the listener waiting forever: give up on connecting after 10 s, and let TCP keepalives
# notice a dead idle connection within about a minute so that it is replaced.
_LISTEN_OPTIONS = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def conninfo_from_sqlalchemy(url: str) -> str:
    """Turn ``postgresql+psycopg://...`` into a libpq connection string."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresNotifier:
    """LISTENs on one dedicated autocommit connection per process; reconnects on failure."""

    notify_sql = f"SELECT pg_notify('{CHANNEL}', %s)"

    def __init__(self, database_url: str) -> None:
        self._conninfo = conninfo_from_sqlalchemy(database_url)
        self._stop = threading.Event()
        self._conn: psycopg.Connection | None = None

    def start(self, on_wake: WakeCallback) -> None:
        """Start the listening thread (a greenlet under gevent)."""
        ready = threading.Event()
        threading.Thread(target=self._run, args=(on_wake, ready), daemon=True).start()
        # Wait briefly so that a viewer subscribing right after start does not miss a NOTIFY.
        ready.wait(5)

    def _run(self, on_wake: WakeCallback, ready: threading.Event) -> None:
        delay = 0.5
        first = True
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, **_LISTEN_OPTIONS) as conn:
                    self._conn = conn
                    conn.execute(f"LISTEN {CHANNEL}")
                    ready.set()
                    if not first:
                        on_wake(None)  # notifications sent while we were away are lost
                    first = False
                    delay = 0.5
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            on_wake(note.payload)
            except Exception as exc:  # noqa: BLE001 - keep listening whatever happened
                if self._stop.is_set():
                    return
                log.warning("LISTEN connection lost (%s); reconnecting in %.1f s", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def published(self, bin_ids: Iterable[str]) -> None:
        """Nothing to do: the capture transaction already ran ``pg_notify``."""

    def close(self) -> None:
        """Stop listening."""
        self._stop.set()
