"""Re-sign a request with a fresh timestamp, the way each provider would have signed it."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from secrets import token_hex
from urllib.parse import parse_qsl, urlsplit

from app.core.bytes import as_bytes
from app.signing.common import PROVIDERS, Headers, Outcome, detect, hmac_digest, sw_key
from app.signing.twilio import form_params, signature_algorithm, signed_string

__all__ = ["sign"]


def _rfc3339_now(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _sign_standard(
    prefix: str, secret: str, body: bytes, now: float, h: Headers
) -> list[tuple[str, str]]:
    key = sw_key(secret)
    if key is None:
        raise ValueError("secret is not base64 after an optional whsec_ prefix")
    # Keep the message id: receivers dedupe on it, and a replay is the same message.
    msg_id = (h.first(f"{prefix}-id") or "").strip() or f"msg_{token_hex(14)}"
    timestamp = str(int(now))
    mac = hmac_digest(key, f"{msg_id}.{timestamp}.".encode() + body)
    return [
        (f"{prefix}-id", msg_id),
        (f"{prefix}-timestamp", timestamp),
        (f"{prefix}-signature", "v1," + base64.b64encode(mac).decode()),
    ]


def _sign_twilio(
    key: bytes, body: bytes, h: Headers, url: str, method: str
) -> list[tuple[str, str]]:
    if not url:
        raise ValueError("a Twilio signature covers the URL; pass the URL being called")
    try:
        algorithm = signature_algorithm(h)
        has_body_hash = any(k == "bodySHA256" for k, _ in parse_qsl(urlsplit(url).query))
        params = [] if has_body_hash else form_params(h, method, body)
    except Outcome as outcome:
        raise ValueError(outcome.reason) from None
    mac = hmac_digest(key, signed_string(url, params), algorithm)
    return [("X-Twilio-Signature", base64.b64encode(mac).decode())]


def sign(
    provider: str,
    secret: str,
    *,
    body: bytes,
    now: float,
    headers: list[tuple[str, str]],
    url: str = "",
    method: str = "POST",
) -> list[tuple[str, str]]:
    """Signature headers to SET (replacing any existing ones) so ``body`` verifies at ``now``.

    Used to re-sign a replayed request with a fresh timestamp. ``headers`` are the request's
    current headers: they supply message ids to keep, the Content-Type (Twilio form bodies), and
    whether GitHub's legacy SHA-1 header was present. ``provider`` may be ``"auto"``.

    Raises ``ValueError`` for an unknown/undetectable provider, an empty secret, a Standard
    Webhooks/Svix secret that is not base64, or a Twilio request without a URL or with a form
    body that is not UTF-8.
    """
    h = Headers(headers)
    if provider == "auto":
        detected = detect(h)
        if detected is None:
            raise ValueError("no signature header from a known provider to re-sign")
        provider = detected
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}")
    if not secret:
        raise ValueError("no secret to sign with")
    body = as_bytes(body)
    key = secret.encode()

    if provider == "github":
        out = [("X-Hub-Signature-256", "sha256=" + hmac_digest(key, body).hex())]
        if h.has("X-Hub-Signature"):
            out.append(("X-Hub-Signature", "sha1=" + hmac_digest(key, body, "sha1").hex()))
        return out
    if provider == "stripe":
        timestamp = int(now)
        mac = hmac_digest(key, f"{timestamp}.".encode() + body).hex()
        return [("Stripe-Signature", f"t={timestamp},v1={mac}")]
    if provider == "slack":
        timestamp = str(int(now))
        mac = hmac_digest(key, f"v0:{timestamp}:".encode() + body).hex()
        return [("X-Slack-Request-Timestamp", timestamp), ("X-Slack-Signature", f"v0={mac}")]
    if provider == "shopify":
        value = base64.b64encode(hmac_digest(key, body)).decode()
        names = [n for n in ("X-Shopify-Hmac-Sha256", "shopify-hmac-sha256") if h.has(n)]
        return [(n, value) for n in names or ["X-Shopify-Hmac-Sha256"]]
    if provider == "standard-webhooks":
        return _sign_standard("webhook", secret, body, now, h)
    if provider == "svix":
        return _sign_standard("svix", secret, body, now, h)
    if provider == "gitlab":
        return [("X-Gitlab-Token", secret)]
    if provider == "twilio":
        return _sign_twilio(key, body, h, url, method)
    # twitch
    msg_id = (h.first("Twitch-Eventsub-Message-Id") or "").strip() or token_hex(16)
    timestamp = _rfc3339_now(now)
    mac = hmac_digest(key, (msg_id + timestamp).encode() + body).hex()
    return [
        ("Twitch-Eventsub-Message-Id", msg_id),
        ("Twitch-Eventsub-Message-Timestamp", timestamp),
        ("Twitch-Eventsub-Message-Signature", f"sha256={mac}"),
    ]
