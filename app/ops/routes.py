"""The operator endpoints: ``GET /metrics`` (Prometheus) and ``GET /readyz`` (readiness).

``/healthz`` (the web pages) says the process is alive; ``/readyz`` says it can do its work:
the database answers and is on the newest schema. A load balancer sends traffic to ready
instances only, and a rolling deploy waits for it.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from sqlalchemy.exc import SQLAlchemyError

from app.config import Settings
from app.ops import access, metrics, schema
from app.storage.repository import Storage

log = logging.getLogger(__name__)

#: Seconds a client is asked to wait before asking /readyz again.
READY_RETRY_AFTER = 5


def _refused(message: str) -> Response:
    response = jsonify({"error": message})
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Bearer realm="hookbin"'
    response.headers["Cache-Control"] = "no-store"
    return response


def _not_ready(reason: str) -> Response:
    response = jsonify({"ready": False, "reason": reason})
    response.status_code = 503
    response.headers["Retry-After"] = str(READY_RETRY_AFTER)
    response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask, storage: Storage, settings: Settings) -> None:
    """Register ``/metrics`` and ``/readyz`` on ``app``, over ``storage``."""
    tokens = settings.admin_tokens

    def metrics_page() -> Response:
        """Prometheus text for loopback, or for a request with a valid admin token."""
        if not access.is_local(request.environ, settings.proxy_hops):
            if not tokens:
                log.warning("refused /metrics to %s: no admin token is set", request.remote_addr)
                return _refused(
                    "metrics are served to loopback addresses only: set HOOKBIN_ADMIN_TOKEN "
                    "to scrape from elsewhere"
                )
            presented = access.bearer_token(request.headers.get("Authorization"))
            if presented is None or not access.token_matches(presented, tokens):
                log.warning("refused /metrics to %s: no valid admin token", request.remote_addr)
                return _refused("a valid admin token is required (Authorization: Bearer ...)")
        body, content_type = metrics.render(storage)
        return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})

    def readyz() -> Response:
        """200 when the database answers and is on the newest schema, else 503 and why."""
        try:
            state = storage.read(schema.schema_state)
        except SQLAlchemyError as exc:
            return _not_ready(f"the database does not answer ({type(exc).__name__})")
        if not state.ready:
            return _not_ready(f"the database {state.problem()}")
        response = jsonify({"ready": True, "revision": state.current})
        response.headers["Cache-Control"] = "no-store"
        return response

    app.add_url_rule("/metrics", "ops_metrics", metrics_page, methods=["GET"])
    app.add_url_rule("/readyz", "ops_readyz", readyz, methods=["GET"])
