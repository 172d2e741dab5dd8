"""Replay a stored request to a target URL and store what happened as an attempt."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.config import Settings
from app.core.clock import utcnow
from app.delivery import via
from app.delivery.client import send
from app.delivery.policy import TargetRefused, policy_for, vet_target
from app.storage.repository import Storage

if TYPE_CHECKING:
    from app.delivery.edit import Outgoing

__all__ = ["TargetRefused", "replay", "suffix_of"]


def suffix_of(item: dict[str, Any]) -> str:
    """The captured sub-path plus raw query, as appended to a target URL."""
    query = item["query_string"]
    return item["path"] + (f"?{query}" if query else "")


def replay(
    storage: Storage,
    settings: Settings,
    item: dict[str, Any],
    url: str,
    *,
    kind: str = "replay",
    request_host: str | None = None,
    outgoing: Outgoing | None = None,
    queue_id: int | None = None,
    try_no: int | None = None,
) -> dict[str, Any]:
    """Send request ``item`` to ``url`` and return the stored attempt.

    ``outgoing`` (see ``app.delivery.edit``) is an edited and/or re-signed version of the request:
    it is sent instead of the captured one and stored with the attempt.

    Raises ``TargetRefused`` (nothing is sent or stored) when the policy refuses the target.
    A target that cannot be reached still yields a stored attempt, with ``status`` None and
    ``error`` set. Auto-forwards pass their queue entry and try number (``queue_id``,
    ``try_no``), which are stored with the attempt.
    """
    target = vet_target(url, policy_for(settings, request_host))
    if outgoing is None:
        method, suffix = item["method"], suffix_of(item)
        headers = [(name, value) for name, value in item["headers"]]
        body = storage.get_body(item["seq"])
        sent: dict[str, Any] = {}
    else:
        method, suffix, body = outgoing.method, outgoing.suffix, outgoing.body
        headers = outgoing.send_headers()
        sent = outgoing.attempt_fields()
    headers = via.marked(headers, storage.deployment_id())
    started = utcnow()
    result = send(
        method,
        target,
        suffix,
        headers,
        body,
        timeout=settings.replay_timeout_seconds,
        max_response_bytes=settings.replay_max_response_bytes,
        verify_tls=settings.replay_verify_tls,
    )
    return storage.add_attempt(
        item["seq"],
        kind,
        queue_id=queue_id,
        try_no=try_no,
        method=method,
        url=url,
        started_at=started,
        status=result.status,
        response_headers=result.headers,
        response_body=result.body,
        response_size=result.body_size,
        truncated=result.truncated,
        elapsed_ms=result.elapsed_ms,
        error=result.error,
        **sent,
    )


def record_refusal(
    storage: Storage,
    item: dict[str, Any],
    url: str,
    kind: str,
    why: str,
    *,
    queue_id: int | None = None,
    try_no: int | None = None,
) -> None:
    """Store a forward that the target policy refused, so the user sees why nothing arrived."""
    storage.add_attempt(
        item["seq"],
        kind,
        queue_id=queue_id,
        try_no=try_no,
        method=item["method"],
        url=url,
        started_at=utcnow(),
        status=None,
        response_headers=[],
        response_body=b"",
        response_size=0,
        truncated=False,
        elapsed_ms=0.0,
        error=f"refused: {why}",
    )
