"""Run blocking C calls off the gevent event loop.

Under gunicorn's gevent worker every "thread" is a greenlet sharing one event loop. A C call that
may wait a long time (a ``flock`` held by another process, a write transaction that queues
behind other writers) freezes the whole worker while it waits: no request is read and no
websocket frame is sent. ``run_blocking`` hands such a call to gevent's pool of real OS threads
and parks only the calling greenlet. Short calls are cheaper on the loop: each hand-over costs a
GIL round trip, which the capture commit measured at several times its own cost.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def gevent_patched() -> bool:
    """True when gevent has monkey-patched ``threading`` in this process."""
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey and monkey.is_module_patched("threading"))


def run_blocking(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Call ``fn`` on a native thread when running under gevent, directly otherwise.

    ``fn`` must not touch gevent objects (events, queues, patched locks shared with greenlets):
    it runs outside the event loop.
    """
    if not gevent_patched():
        return fn(*args, **kwargs)
    import gevent

    return gevent.get_hub().threadpool.apply(fn, args, kwargs)
