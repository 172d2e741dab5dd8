"""Bins, requests and attempts as the JSON API and the live stream show them."""

from __future__ import annotations

import base64
from typing import Any

from app.config import format_duration
from app.delivery.queue import describe
from app.storage.retention import effective
from app.web.lookup import services
from app.web.urls import capture_url, view_url

_INTERNAL_FIELDS = frozenset({"seq", "signing_rev", "token_hash", "page_key_salt"})


def public_request(item: dict[str, Any]) -> dict[str, Any]:
    """A stored request as the API shows it (internal bookkeeping left out)."""
    return {k: v for k, v in item.items() if k not in _INTERNAL_FIELDS}


def public_bin(bin_: dict[str, Any], page_key: str | None = None) -> dict[str, Any]:
    """A bin with its absolute URLs, internal bookkeeping left out and secrets only hinted at.

    ``page_key`` (for those who may manage the bin) makes ``view_url`` the bin's view link.
    """
    shown = {k: v for k, v in bin_.items() if k not in _INTERNAL_FIELDS}
    shown["signing"] = signing_shown(bin_.get("signing"))
    return {
        **shown,
        **bin_limits(bin_),
        "capture_url": capture_url(bin_["id"]),
        "view_url": view_url(bin_["id"], page_key),
    }


def secret_hint(secret: str) -> str:
    """What is shown of a saved secret: its last four characters, when it is long enough."""
    return "\u2026" + secret[-4:] if len(secret) >= 12 else "\u2026"


def signing_shown(signing: dict[str, Any] | None) -> dict[str, Any] | None:
    """A bin's signing setting as shown: the provider and how many secrets are set, never them."""
    if signing is None:
        return None
    secrets = signing.get("secrets") or []
    return {
        "provider": signing.get("provider", "auto"),
        "secrets_set": len(secrets),
        "secret_hints": [secret_hint(s) for s in secrets],
    }


def bin_limits(bin_: dict[str, Any]) -> dict[str, Any]:
    """A bin's own retention (as a duration too) and what it keeps in effect, the server's
    settings filling in where it has none (0: no limit)."""
    settings = services().settings
    own = bin_.get("retention_seconds")
    retention = effective(own, settings.retention_seconds)
    return {
        "retention": None if own is None else format_duration(own),
        "retention_seconds": own,
        "max_requests": bin_.get("max_requests"),
        "effective_retention": format_duration(retention),
        "effective_retention_seconds": retention,
        "effective_max_requests": effective(bin_.get("max_requests"), settings.bin_max_requests),
    }


def public_attempt(attempt: dict[str, Any]) -> dict[str, Any]:
    """An attempt with its body as base64 (and as text when it is UTF-8).

    ``sent`` is what an edited or re-signed replay sent (null: the captured request as is), in
    the same fields the replay API takes.
    """
    body: bytes = attempt["body"]
    out = {k: v for k, v in attempt.items() if k != "body"}
    out["body_base64"] = base64.b64encode(body).decode()
    try:
        out["body_text"] = body.decode("utf-8")
    except UnicodeDecodeError:
        out["body_text"] = None
    sent = attempt.get("sent")
    if sent is not None:
        path, _, query = sent["suffix"].partition("?")
        sent_body: bytes = sent["body"]
        try:
            sent_text: str | None = sent_body.decode("utf-8")
        except UnicodeDecodeError:
            sent_text = None
        out["sent"] = {
            "method": attempt["method"],
            "path": path,
            "query": query,
            "headers": sent["headers"],
            "body_base64": base64.b64encode(sent_body).decode(),
            "body_text": sent_text,
            "body_size": len(sent_body),
        }
    return out


def public_forward(state: dict[str, Any], max_tries: int) -> dict[str, Any]:
    """A request's auto-forward state with the retry budget and a line for people."""
    return {**state, "max_tries": max_tries, "summary": describe(state)}
