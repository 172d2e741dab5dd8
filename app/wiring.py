"""The long-lived parts of one Hookbin process, wired together once per app.

Capture -> store (through the commit batcher) -> publish (hub + notifier) -> render (views). Flask
views reach these through ``current_services()``; tests and the capture WSGI app get them directly.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

from flask import current_app
from sqlalchemy.engine import Engine

from app.config import Settings
from app.core import lifecycle
from app.core.blocking import run_blocking
from app.delivery.loop import DeliveryLoop
from app.limits.counts import add_hits
from app.limits.policy import Limits, build_limits
from app.live.hub import Hub
from app.live.pubsub import Notifier, make_notifier
from app.ops import metrics
from app.storage.batcher import CommitBatcher
from app.storage.captures import Capture, Stored, insert_captures
from app.storage.db import make_engine, sqlite_file
from app.storage.purge import PurgeLease, PurgeLoop
from app.storage.repository import Storage
from app.storage.walsync import Checkpointer, WalFile
from app.storage.writelock import FileWriteLock, writer_lock_path
from app.storage.writes import SerialWrites


@dataclass
class Services:
    """Everything a request handler needs besides the request."""

    settings: Settings
    engine: Engine
    storage: Storage
    notifier: Notifier
    hub: Hub
    batcher: CommitBatcher[Capture, Stored | None]
    delivery: DeliveryLoop
    writes: SerialWrites
    #: SQLite only: the capture writer's own single-connection engine.
    writer_engine: Engine | None = None
    #: SQLite: the background checkpoints of the capture writer's log.
    checkpointer: Checkpointer | None = None
    #: Deletes requests past retention or beyond their bin's cap (one process at a time).
    purge: PurgeLoop | None = None
    #: Rate limits on captures and bin creation (each None when off).
    limits: Limits = field(default_factory=Limits)
    _started_pid: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        """Start this process's background work: other processes' notifications, deliveries.

        Under gunicorn the worker lifecycle calls it once the worker is ready; again after a fork
        it starts afresh, and a second call in the same process does nothing.
        """
        with self._lock:
            if self._started_pid == os.getpid():
                return
            self.notifier.start(lambda bin_id: self.hub.deliver_now((bin_id,)))
            self._started_pid = os.getpid()
        self.delivery.ensure_started()
        if self.purge is not None:
            self.purge.start()

    def close(self) -> None:
        """Release sockets and connections (tests call this)."""
        if self.purge is not None:
            self.purge.stop()
        self.delivery.stop()
        self.notifier.close()
        self.writes.close()
        if self.checkpointer is not None:
            self.checkpointer.close()
        if self.writer_engine is not None:
            self.writer_engine.dispose()
        self.engine.dispose()


# The capture writer's own automatic checkpoint, a backstop to the background checkpoints.
WRITER_AUTOCHECKPOINT_PAGES = 20_000


def build_services(settings: Settings) -> Services:
    """Create the engine, writer, hub and notifier for ``settings``."""
    engine = make_engine(
        settings.database_url,
        sqlite_synchronous=settings.sqlite_synchronous,
        sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms,
    )
    notifier = make_notifier(settings)
    writes = SerialWrites(settings, engine)
    storage = Storage(engine, writes)
    hub = Hub(
        fetch_after=lambda b, after, limit: storage.requests_after(b, after, limit=limit),
        last_seq=storage.last_seq,
        poll_seconds=settings.stream_poll_seconds,
        high_water=storage.high_water,
        changed_since=storage.bins_changed_since,
        max_backlog=settings.stream_max_backlog,
    )

    db_file = sqlite_file(settings.database_url)
    sync = None
    writer_engine = None
    checkpointer = None
    if db_file is not None:
        # SQLite: the commit runs on the event loop with the writer's own connection, one writer
        # per file at a time: a short commit costs less there than the GIL hand-overs of a native
        # thread. Only the wait for another process's commit and the checkpoints leave the loop.
        synchronous = settings.sqlite_synchronous.upper()
        flush_after_commit = synchronous == "FULL"
        # In every mode: a checkpoint run by the committing connection would freeze the worker.
        checkpointer = Checkpointer(
            db_file,
            run_blocking,
            synchronous="NORMAL" if flush_after_commit else synchronous,
            wal_limit_bytes=int(settings.sqlite_wal_limit_mb * 1024 * 1024),
        )
        if flush_after_commit:
            # After the commit, outside the write lock, on the loop: the flush is short, and a
            # hand-over to a native thread would make every acknowledgement wait for the GIL.
            sync = WalFile(db_file).sync
        writer_engine = make_engine(
            settings.database_url,
            sqlite_synchronous="NORMAL" if flush_after_commit else synchronous,
            sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms,
            single_connection=True,
            # A backstop only: the checkpointer keeps the log far shorter than this.
            sqlite_autocheckpoint=WRITER_AUTOCHECKPOINT_PAGES,
        )
        write_lock = FileWriteLock(writer_lock_path(db_file))
        lock_timeout = settings.sqlite_busy_timeout_ms / 1000

        def insert(batch: Sequence[Capture]) -> list[Stored | None]:
            results = insert_captures(
                writer_engine,
                batch,
                write_lock=write_lock.cooperatively(lock_timeout),
                # A log that background checkpoints cannot keep short is finished off here.
                then=checkpointer.finish if checkpointer.finish_due() else None,
            )
            checkpointer.committed()
            return results

    else:
        # PostgreSQL: psycopg waits cooperatively under gevent, so the commit may stay on the loop.
        def insert(batch: Sequence[Capture]) -> list[Stored | None]:
            return insert_captures(engine, batch, notify_sql=notifier.notify_sql)

    def published(batch: Sequence[Capture], results: list[Stored | None]) -> None:
        metrics.observe_commit_batch(len(batch))
        touched = sorted({c.bin_id for c, r in zip(batch, results, strict=True) if r is not None})
        # The other processes first: their viewers' frames need not wait for ours.
        notifier.published(touched)
        hub.deliver_now(touched)

    batcher: CommitBatcher[Capture, Stored | None] = CommitBatcher(
        insert,
        sync=sync,
        published=published,
        batch_max=settings.commit_batch_max,
        linger_seconds=settings.commit_linger_ms / 1000.0,
        idle_max_seconds=settings.commit_idle_max_ms / 1000.0,
    )

    def count_hits(scope: str, key: str, window: int, hits: int, sweep: int | None) -> int:
        return storage.write(add_hits, scope, key, window, hits, sweep_before=sweep)

    purge = PurgeLoop(storage, settings, PurgeLease(engine, db_file))
    services = Services(
        settings=settings,
        engine=engine,
        storage=storage,
        notifier=notifier,
        hub=hub,
        batcher=batcher,
        delivery=DeliveryLoop(storage, settings),
        writes=writes,
        writer_engine=writer_engine,
        checkpointer=checkpointer,
        purge=purge,
        limits=build_limits(settings, count_hits),
    )
    # Under gunicorn, deliveries left pending (by a restart, by other processes) resume without
    # waiting for a first request to this worker.
    lifecycle.at_worker_start(services.start)
    lifecycle.at_worker_exit(partial(services.delivery.stop, settings.replay_timeout_seconds))
    lifecycle.at_worker_exit(purge.stop)
    return services


def current_services() -> Services:
    """The services of the Flask app handling the current request."""
    services: Services = current_app.extensions["hookbin"]
    return services
