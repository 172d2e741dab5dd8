"""Cross-process "something new in bin X" notifications.

A notification carries only a bin id; viewers then read the new rows from the store, which stays
the single source of truth. Losing a notification therefore delays a push but never loses data, and
the live hub re-checks every subscribed bin on a timer as a safety net.

Two drivers implement the ``Notifier`` interface:

* ``postgres.PostgresNotifier`` - ``pg_notify`` inside the capture transaction, ``LISTEN`` on a
  dedicated connection: works across workers and hosts sharing one database.
* ``unixsocket.UnixSocketNotifier`` - for SQLite: every process binds a Unix datagram socket in
  one directory and publishers send to all of them. No extra server, works across workers and
  across instances on one host (which is all SQLite supports anyway).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from app.config import Settings

WakeCallback = Callable[[str | None], None]
"""Called with a bin id, or None meaning "anything may have changed" (after a reconnect)."""


class Notifier(Protocol):
    """What the capture path and the live hub need from a pub/sub driver."""

    #: SQL run once per bin inside the capture transaction (``%s`` = bin id), or None.
    notify_sql: str | None

    def start(self, on_wake: WakeCallback) -> None:
        """Begin delivering notifications from other processes to ``on_wake``."""

    def published(self, bin_ids: Iterable[str]) -> None:
        """Tell other processes that ``bin_ids`` gained requests (called after commit)."""

    def close(self) -> None:
        """Stop listening and release resources."""


def make_notifier(settings: Settings) -> Notifier:
    """The driver that fits the configured database."""
    if settings.is_sqlite:
        from app.live.pubsub.unixsocket import UnixSocketNotifier

        return UnixSocketNotifier(settings.notify_dir())
    from app.live.pubsub.postgres import PostgresNotifier

    return PostgresNotifier(settings.database_url)
