"""Diagnostic gunicorn config: app/gunicorn_conf.py plus hooks that measure, never change, the app.

Same settings as ``app/gunicorn_conf.py`` (imported wholesale). Additions:

* ``post_worker_init`` (after the stock hook) starts a watchdog greenlet that sleeps 2 ms in a loop
  and records how late it wakes up (= how long the worker's event loop was blocked), and times
  every garbage collection through ``gc.callbacks``.
* ``worker_exit`` prints one ``BATCHSTATS`` line per worker: commits and rows committed by the
  ``CommitBatcher`` (rows per commit), event-loop stalls, GC pauses.

Used by ``capture_bench.py --diagnose`` and ``--stats-conf``.
"""

from __future__ import annotations

import gc
import sys
import time
from typing import Any

from app.core import lifecycle
from app.gunicorn_conf import *  # noqa: F403

_stalls: list[float] = []
_gc: dict[int, list[float]] = {0: [], 1: [], 2: []}
_gc_start = [0.0]


def _gc_cb(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_start[0] = time.perf_counter()
    else:
        _gc[info["generation"]].append(time.perf_counter() - _gc_start[0])


def _watchdog() -> None:
    import gevent

    tick = 0.002
    while True:
        t0 = time.perf_counter()
        gevent.sleep(tick)
        late = time.perf_counter() - t0 - tick
        if late > 0.005:
            _stalls.append(late)


def post_worker_init(worker: Any) -> None:  # noqa: F811 - wraps the stock hook
    lifecycle.post_worker_init(worker)
    import gevent

    gc.callbacks.append(_gc_cb)
    gevent.spawn(_watchdog)


def _summary(values: list[float]) -> str:
    if not values:
        return "n=0"
    ms = sorted(v * 1000 for v in values)
    return f"n={len(ms)} total={sum(ms):.0f}ms max={ms[-1]:.1f}ms p50={ms[len(ms) // 2]:.1f}ms"


def worker_exit(server: Any, worker: Any) -> None:  # noqa: F811 - wraps the stock hook
    """Run the stock hook, then print one BATCHSTATS line per worker."""
    lifecycle.worker_exit(server, worker)
    app = getattr(worker, "wsgi", None)
    services = getattr(app, "extensions", {}).get("hookbin") if app is not None else None
    batches = rows = -1
    viewers = -1
    if services is not None:
        batches, rows = services.batcher.batches, services.batcher.rows
        viewers = services.hub.viewer_count()
    over = {ms: sum(1 for s in _stalls if s * 1000 > ms) for ms in (10, 20, 50, 100)}
    print(
        f"BATCHSTATS pid={worker.pid} batches={batches} rows={rows} viewers_at_exit={viewers} "
        f"stalls>5ms[{_summary(_stalls)}] stalls_over={over} "
        f"gc0[{_summary(_gc[0])}] gc1[{_summary(_gc[1])}] gc2[{_summary(_gc[2])}]",
        file=sys.stderr,
        flush=True,
    )
