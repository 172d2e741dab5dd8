"""Replay a stored request to a target URL and store what happened as an attempt."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app import store
from app.outbound.client import send
from app.outbound.policy import TargetRefused, vet_target

if TYPE_CHECKING:
    from app.services import Services

__all__ = ["TargetRefused", "replay", "suffix_of"]


def suffix_of(item: dict[str, Any]) -> str:
    """The captured sub-path plus raw query, as appended to a target URL."""
    query = item["query_string"]
    return item["path"] + (f"?{query}" if query else "")


def replay(
    services: Services,
    item: dict[str, Any],
    url: str,
    *,
    kind: str = "replay",
    request_host: str | None = None,
) -> dict[str, Any]:
    """Send request ``item`` to ``url`` and return the stored attempt.

    Raises ``TargetRefused`` (nothing is sent or stored) when the policy refuses the target.
    A target that cannot be reached still yields a stored attempt, with ``status`` None and
    ``error`` set.
    """
    settings = services.settings
    target = vet_target(url, services.target_policy(request_host))
    body = store.get_body(services.engine, item["seq"])
    started = store.utcnow()
    result = send(
        item["method"],
        target,
        suffix_of(item),
        [(name, value) for name, value in item["headers"]],
        body,
        timeout=settings.replay_timeout_seconds,
        max_response_bytes=settings.replay_max_response_bytes,
        verify_tls=settings.replay_verify_tls,
    )
    return store.add_attempt(
        services.engine,
        item["seq"],
        kind,
        method=item["method"],
        url=url,
        started_at=started,
        status=result.status,
        response_headers=result.headers,
        response_body=result.body,
        response_size=result.body_size,
        truncated=result.truncated,
        elapsed_ms=result.elapsed_ms,
        error=result.error,
    )


def record_refusal(services: Services, item: dict[str, Any], url: str, kind: str, why: str) -> None:
    """Store a forward that the target policy refused, so the user sees why nothing arrived."""
    store.add_attempt(
        services.engine,
        item["seq"],
        kind,
        method=item["method"],
        url=url,
        started_at=store.utcnow(),
        status=None,
        response_headers=[],
        response_body=b"",
        response_size=0,
        truncated=False,
        elapsed_ms=0.0,
        error=f"refused: {why}",
    )


def forward_one(services: Services, request_id: str, url: str) -> None:
    """Auto-forward one stored request; a refused target is stored as a failed attempt."""
    item = store.get_request(services.engine, request_id)
    if item is None:
        return  # deleted before its turn came
    try:
        replay(services, item, url, kind="forward")
    except TargetRefused as exc:
        record_refusal(services, item, url, "forward", str(exc))
