"""Delivery ids: how senders say "this is the same event again".

Webhook senders retry until they see a 2xx, and every retry carries the id of the original
delivery. Hookbin keys each capture by that id so a repeat is marked "duplicate of" the first
request that carried it, in the same bin. Pure functions over the captured headers and body.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

#: Header carrying a delivery id -> the prefix that keeps ids of different senders apart.
_ID_HEADERS = (
    ("x-github-delivery", "github"),
    ("webhook-id", "webhook"),
    ("svix-id", "svix"),
    ("x-shopify-webhook-id", "shopify"),
    ("twitch-eventsub-message-id", "twitch"),
    ("x-gitlab-event-uuid", "gitlab"),
    ("x-twilio-idempotency-token", "twilio"),
)

#: Ids are short; anything longer is not an id and must not become a giant index key.
_MAX_ID = 200
#: Bodies looked into for an event id (Stripe, Slack). Events are small; bigger bodies aren't.
_MAX_JSON_BODY = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the capture says about its own delivery."""

    key: str | None
    #: Extra words for people, e.g. "Slack retry 2 (http_timeout)".
    note: str | None = None


def _first(headers: list[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _json_event_id(body: bytes, field: str) -> str | None:
    if not body or len(body) > _MAX_JSON_BODY or body.lstrip()[:1] != b"{":
        return None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    value = data.get(field) if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None


def delivery_of(headers: list[tuple[str, str]], body: bytes) -> Delivery:
    """The delivery id of a capture (None when the sender gives none), with a note."""
    for name, prefix in _ID_HEADERS:
        value = (_first(headers, name) or "").strip()
        if value:
            return Delivery(f"{prefix}:{value}"[:_MAX_ID])
    if _first(headers, "stripe-signature") is not None:
        event_id = _json_event_id(body, "id")
        if event_id:
            return Delivery(f"stripe:{event_id}"[:_MAX_ID])
    retry = _first(headers, "x-slack-retry-num")
    if _first(headers, "x-slack-signature") is not None or retry is not None:
        note = None
        if retry is not None:
            reason = _first(headers, "x-slack-retry-reason") or "no reason given"
            note = f"Slack retry {retry.strip()[:10]} ({reason.strip()[:60]})"
        event_id = _json_event_id(body, "event_id")
        return Delivery(f"slack:{event_id}"[:_MAX_ID] if event_id else None, note)
    return Delivery(None)
