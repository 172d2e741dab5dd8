"""gunicorn settings for Hookbin (``hookbin serve`` passes this file with ``-c``).

Values come from HOOKBIN_* variables through ``app.config`` and the command line. The gevent
worker is the one that fits: open websockets are cheap greenlets there, while a thread per socket
starved the gthread worker in our measurements.
"""

from __future__ import annotations

from app.capture import wireheaders
from app.config import Settings
from app.core import lifecycle

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
accesslog = "-" if Settings.from_env().access_log else None
forwarded_allow_ips = "127.0.0.1,::1"

wireheaders.install()
pre_request = wireheaders.pre_request
post_worker_init = lifecycle.post_worker_init
worker_exit = lifecycle.worker_exit
control_socket_disable = True  # several instances per host must not fight over one socket
