"""Knowing when this worker is shutting down, so long-lived streams can end promptly.

gunicorn lets a worker finish its open connections for ``graceful_timeout`` seconds when it is
told to stop. A websocket never finishes by itself, so without this every restart would wait the
full timeout. Streams check ``draining()`` and close with code 1012 ("service restart"); clients
reconnect (to another worker) and resume from their last request.
"""

from __future__ import annotations

import gc
from typing import Any

_worker: Any = None


def post_worker_init(worker: Any) -> None:
    """gunicorn hook: remember the worker whose ``alive`` flag tells us about shutdown."""
    global _worker
    _worker = worker
    # Everything built so far (the app, its modules, templates) lives as long as the worker:
    # keep it out of the garbage collector's full scans, which otherwise stall the event loop
    # for tens of milliseconds once a few hundred websockets add objects of their own.
    gc.freeze()


def draining() -> bool:
    """True once this worker has been asked to stop."""
    return _worker is not None and not _worker.alive
