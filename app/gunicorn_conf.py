"""gunicorn settings for Hookbin (``hookbin serve`` passes this file with ``-c``).

Values come from HOOKBIN_* variables through ``app.config`` and the command line. The gevent
worker is the one that fits: open websockets are cheap greenlets there, where a thread per
socket is not.
"""

from __future__ import annotations

from typing import Any

from app.capture import wireheaders
from app.config import Settings
from app.core import lifecycle
from app.ops import logs, multiproc

_settings = Settings.from_env()

worker_class = "gevent"
worker_connections = 2000
# Keep headers whose names contain "_" (gunicorn drops them by default); Hookbin reads the real
# header list, not the environ, so they cannot be confused with their dashed twins.
header_map = "dangerous"
# Webhook senders send big bodies; the capture path enforces HOOKBIN_MAX_BODY_BYTES itself.
limit_request_line = 8190
limit_request_fields = 500
limit_request_field_size = 16380
timeout = 60
graceful_timeout = 20
keepalive = 5
accesslog = "-" if _settings.access_log else None
if logs.check_format(_settings.log_format) == "json":
    logger_class = "app.ops.gunicorn_logging.JsonLogger"
forwarded_allow_ips = "127.0.0.1,::1"

wireheaders.install()
pre_request = wireheaders.pre_request
post_worker_init = lifecycle.post_worker_init
control_socket_disable = True  # several instances per host must not fight over one socket

# Metrics of all workers are summed from one directory (``app.ops.multiproc``); made here when
# gunicorn is run directly rather than through ``hookbin serve``. The master imports nothing
# heavy (no database driver, no metric): workers import the app after gevent has patched them.
multiproc.ensure_dir()


def worker_exit(server: Any, worker: Any) -> None:
    """Worker, as it exits: background work hands over, then its live gauges stop counting."""
    lifecycle.worker_exit(server, worker)
    multiproc.mark_dead(worker.pid)


def child_exit(_server: Any, worker: Any) -> None:
    """Master, once a worker is gone, also one killed before its own exit hook could run."""
    multiproc.mark_dead(worker.pid)


def on_exit(_server: Any) -> None:
    """Master, as the server stops: the metrics directory of this start goes with it."""
    multiproc.remove_dir()
