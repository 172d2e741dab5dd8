"""Knowing when this worker is shutting down, so long-lived streams can end promptly.

gunicorn lets a worker finish its open connections for ``graceful_timeout`` seconds when it is
told to stop. A websocket never finishes by itself, so without this every restart would wait the
full timeout. Streams check ``draining()`` and close with code 1012 ("service restart"); clients
reconnect (to another worker) and resume from their last request.

Background work that belongs to a worker (the auto-forward delivery loop) registers here to be
started as soon as the worker is ready and stopped as it exits.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_worker: Any = None
_at_start: list[Callable[[], None]] = []
_at_exit: list[Callable[[], None]] = []


def at_worker_start(fn: Callable[[], None]) -> None:
    """Run ``fn`` in each gunicorn worker once it is ready (background work that must not wait
    for a first request, e.g. deliveries left pending by a restart)."""
    _at_start.append(fn)


def at_worker_exit(fn: Callable[[], None]) -> None:
    """Run ``fn`` in each gunicorn worker as it exits, after its last request."""
    _at_exit.append(fn)


def post_worker_init(worker: Any) -> None:
    """gunicorn hook: remember the worker whose ``alive`` flag tells us about shutdown."""
    global _worker
    _worker = worker
    for fn in _at_start:
        fn()
    # Everything built so far (the app, its modules, templates) lives as long as the worker:
    # keep it out of the garbage collector's full scans, which otherwise stall the event loop
    # for tens of milliseconds once a few hundred websockets add objects of their own.
    gc.freeze()


def draining() -> bool:
    """True once this worker has been asked to stop."""
    return _worker is not None and not _worker.alive


def worker_exit(_server: Any, _worker_: Any) -> None:
    """gunicorn hook: let background work finish or hand over before the worker is gone."""
    for fn in _at_exit:
        try:
            fn()
        except Exception:  # noqa: BLE001 - the others still get their turn
            log.exception("worker exit hook %r failed", fn)
