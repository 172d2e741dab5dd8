"""Every Prometheus metric Hookbin exports, and the ``/metrics`` page built from them.

Under gunicorn each worker is its own process, so the metrics use prometheus_client's
multiprocess mode: ``hookbin serve`` gives every server start a private directory
(``PROMETHEUS_MULTIPROC_DIR``, see ``app.ops.multiproc``) where each worker keeps its values,
and a scrape, whichever worker answers it, sums them all. Without that variable (a single
process, tests) the same metrics live in memory.

The capture path pays one counter increment and one histogram observation per request, nothing
more. Figures that the database already holds (the forward queue) are read at scrape time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy.engine import Engine

from app.delivery.queue import PENDING
from app.storage.db import forward_queue
from app.storage.repository import Storage

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

# No ``*_created`` series: multiprocess mode has none, and both modes should read the same.
disable_created_metrics()

# Hookbin's own metrics, apart from the process-wide default registry (gc, process figures).
_REGISTRY = CollectorRegistry(auto_describe=True)

CAPTURES = Counter(
    "hookbin_captures_total",
    "Requests to capture URLs, by the status they were answered with.",
    ["status"],
    registry=_REGISTRY,
)
CAPTURE_DURATION = Histogram(
    "hookbin_capture_duration_seconds",
    "Time from a capture's arrival to its answer (the commit it waits for included).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=_REGISTRY,
)
COMMIT_BATCH_SIZE = Histogram(
    "hookbin_commit_batch_size",
    "Captured requests stored by one group commit.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
    registry=_REGISTRY,
)
LIVE_VIEWERS = Gauge(
    "hookbin_live_viewers",
    "Open live websocket streams, over all workers.",
    multiprocess_mode="livesum",
    registry=_REGISTRY,
)
FORWARD_ATTEMPTS = Counter(
    "hookbin_forward_attempts_total",
    "Tries of auto-forward deliveries, by outcome.",
    ["outcome"],
    registry=_REGISTRY,
)
PURGED_REQUESTS = Counter(
    "hookbin_purged_requests_total",
    "Captured requests deleted by retention.",
    registry=_REGISTRY,
)

#: Outcomes of one auto-forward try (``hookbin_forward_attempts_total{outcome=...}``).
DELIVERED = "delivered"  # the target answered 2xx
FAILED = "failed"  # it did not; a retry is scheduled
GAVE_UP = "gave_up"  # it did not, and that was the last try
REFUSED = "refused"  # the target policy refused the URL; no retry can change that
ERROR = "error"  # the try itself broke (a bug, the database): counted as a failed try

# One child per status, made on first use: ``labels()`` takes a lock and builds a key each call.
_capture_children: dict[str, Any] = {}


def count_capture(status: str, seconds: float) -> None:
    """Record one answered capture: its status code (``"200"``) and how long it took."""
    child = _capture_children.get(status)
    if child is None:
        child = _capture_children[status] = CAPTURES.labels(status)
    child.inc()
    CAPTURE_DURATION.observe(seconds)


def measure_captures(app: WSGIApp) -> WSGIApp:
    """Wrap the capture WSGI app so every answer is counted and timed."""
    clock = time.perf_counter

    def measured(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        arrived = clock()

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            count_capture(status[:3], clock() - arrived)
            return start_response(status, headers, exc_info)

        try:
            return app(environ, start)
        except Exception:
            count_capture("500", clock() - arrived)  # the server answers 500 for us
            raise

    return measured


def observe_commit_batch(size: int) -> None:
    """Record the size of one durable group commit."""
    COMMIT_BATCH_SIZE.observe(size)


def viewer_opened() -> None:
    """A live viewer subscribed in this process."""
    LIVE_VIEWERS.inc()


def viewer_closed() -> None:
    """A live viewer of this process went away."""
    LIVE_VIEWERS.dec()


def count_forward_attempt(outcome: str) -> None:
    """Record one auto-forward try with its outcome (``DELIVERED``, ``FAILED``, ...)."""
    FORWARD_ATTEMPTS.labels(outcome).inc()


def count_purged(n: int) -> None:
    """Record ``n`` captured requests deleted by retention."""
    if n > 0:
        PURGED_REQUESTS.inc(n)


def pending_forwards(engine: Engine) -> int:
    """Entries of the auto-forward queue still waiting to be delivered (one COUNT)."""
    q = forward_queue
    query = sa.select(sa.func.count()).select_from(q).where(q.c.state == PENDING)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


class _QueueDepth:
    """Reads the forward queue's depth from the database at scrape time (one per scrape)."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "hookbin_forward_queue_depth",
            "Auto-forward queue entries pending delivery (shared by every process).",
        )
        # A database that does not answer leaves the gauge out; /readyz says why.
        try:
            depth.add_metric([], self._storage.read(pending_forwards))
        except sa.exc.SQLAlchemyError:
            return
        yield depth


class _Local:
    """This process's in-memory values, for a server without a multiprocess directory."""

    def collect(self) -> Iterable[Metric]:
        return _REGISTRY.collect()


def render(storage: Storage) -> tuple[bytes, str]:
    """The metrics page: Prometheus text and its content type."""
    registry = CollectorRegistry()
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        MultiProcessCollector(registry, path=directory)
    else:
        registry.register(_Local())  # type: ignore[arg-type]
    registry.register(_QueueDepth(storage))  # type: ignore[arg-type]
    return generate_latest(registry), CONTENT_TYPE_LATEST
