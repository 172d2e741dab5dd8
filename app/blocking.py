"""Run blocking C calls off the gevent event loop.

Under gunicorn's gevent worker every "thread" is a greenlet sharing one event loop. SQLite does its
work, fsyncs and lock waits included, inside C calls that the loop cannot interrupt, so a commit
run on the loop freezes the whole worker: no request is read, no websocket frame is sent, and no
batch can form while it runs. ``run_blocking`` hands such a call to gevent's pool of real OS
threads (sqlite3 releases the GIL while it works) and parks only the calling greenlet.
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
