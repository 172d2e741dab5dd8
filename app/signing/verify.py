"""Check a captured request's webhook signature, for each provider Hookbin recognises.

The caller passes the raw body bytes exactly as received (every scheme signs those bytes;
anything re-serialised no longer matches), the headers as an ordered list of ``(name, value)``
pairs, the public URL the sender called (only Twilio needs it) and the current unix time, so
tests are deterministic.

``verify`` never raises: malformed input of any kind becomes ``status="invalid"`` with a reason a
person can act on. Every provider's parser rejects bad input explicitly; a last-resort guard
around each provider turns anything the parsers missed into "invalid" too.

Schemes:

* GitHub            ``X-Hub-Signature-256: sha256=<hex>`` over the body (legacy SHA-1 fallback)
* Stripe            ``Stripe-Signature: t=<unix>,v1=<hex>`` over ``"{t}.{body}"``, raw whsec_ key
* Slack             ``X-Slack-Signature: v0=<hex>`` over ``"v0:{ts}:{body}"``
* Shopify           ``X-Shopify-Hmac-Sha256: <base64>`` over the body
* Standard Webhooks ``webhook-signature: v1,<b64> ...`` over ``"{id}.{ts}.{body}"``, key base64
* Svix              same as Standard Webhooks with ``svix-*`` headers
* GitLab            ``X-Gitlab-Token: <secret>`` (the secret itself, no MAC)
* Twilio            ``X-Twilio-Signature``: base64 HMAC-SHA1 over URL + sorted form params
* Twitch EventSub   ``Twitch-Eventsub-Message-Signature: sha256=<hex>`` over id + ts + body
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from app.core.bytes import as_bytes
from app.signing.common import (
    LABELS,
    PROVIDERS,
    Ctx,
    Headers,
    Invalid,
    Missing,
    Outcome,
    Unchecked,
    Verdict,
    detect,
    freshness,
    hmac_digest,
    match_secret,
    parse_b64,
    parse_hex,
    parse_rfc3339,
    parse_unix_ts,
    settle,
    show,
    sw_key,
)
from app.signing.twilio import verify_twilio

__all__ = ["detect_provider", "verify"]

#: Freshness windows in seconds, as each provider's own library/docs apply them.
STRIPE_TOLERANCE = 300  # past only, like stripe.WebhookSignature.verify_header
SLACK_TOLERANCE = 300  # abs(now - ts), like slack_sdk's SignatureVerifier
STANDARD_WEBHOOKS_TOLERANCE = 300  # both directions, like standardwebhooks / svix
TWITCH_TOLERANCE = 600  # "older than 10 minutes" per Twitch's EventSub docs; past only


def detect_provider(headers: list[tuple[str, str]]) -> str | None:
    """Guess the sender from the headers present (names compared case-insensitively)."""
    try:
        return detect(Headers(headers))
    except Exception:  # detection is a convenience; never let it break a request view
        return None


def _verify_github(c: Ctx) -> Verdict:
    value = c.headers.get("X-Hub-Signature-256")
    if value is not None:
        if not value.startswith("sha256="):
            raise Invalid("X-Hub-Signature-256 does not start with sha256=")
        digest = parse_hex(value[len("sha256=") :], 32, "X-Hub-Signature-256")
        index = match_secret(c.keys, [digest], lambda s: hmac_digest(s.encode(), c.body))
        return settle("github", index)
    legacy = c.headers.get("X-Hub-Signature")
    if legacy is None:
        raise Missing("no X-Hub-Signature-256 header")
    if not legacy.startswith("sha1="):
        raise Invalid("X-Hub-Signature does not start with sha1=")
    digest = parse_hex(legacy[len("sha1=") :], 20, "X-Hub-Signature")
    index = match_secret(c.keys, [digest], lambda s: hmac_digest(s.encode(), c.body, "sha1"))
    return settle(
        "github",
        index,
        note=" (legacy SHA-1 X-Hub-Signature; no X-Hub-Signature-256 was sent)",
    )


def _parse_stripe(value: str) -> tuple[int, list[bytes]]:
    timestamp: int | None = None
    v1: list[bytes] = []
    for raw in value.split(","):
        item = raw.strip()
        if not item:
            raise Invalid("Stripe-Signature has an empty item (stray comma)")
        key, eq, val = item.partition("=")
        if not eq:
            raise Invalid(f"Stripe-Signature item {show(item)} has no '='")
        if key == "t":
            if timestamp is not None:
                raise Invalid("Stripe-Signature has more than one t= entry")
            timestamp = parse_unix_ts(val, "Stripe-Signature t=")
        elif key == "v1":
            v1.append(parse_hex(val, 32, "Stripe-Signature v1= entry"))
        # v0 (test-mode legacy) and unknown schemes are ignored, as Stripe's library does.
    if timestamp is None:
        raise Invalid("Stripe-Signature has no t= entry")
    if not v1:
        raise Invalid("Stripe-Signature has no v1= entry")
    return timestamp, v1


def _verify_stripe(c: Ctx) -> Verdict:
    timestamp, v1 = _parse_stripe(c.headers.primary("Stripe-Signature"))
    signed = f"{timestamp}.".encode() + c.body
    # The key is the whole "whsec_..." string as UTF-8 -- Stripe does NOT base64-decode it,
    # unlike Standard Webhooks/Svix whose secrets look the same.
    index = match_secret(c.keys, v1, lambda s: hmac_digest(s.encode(), signed))
    stale = freshness(timestamp, c.now, past=STRIPE_TOLERANCE, future=None)
    return settle("stripe", index, stale)


def _verify_slack(c: Ctx) -> Verdict:
    value = c.headers.primary("X-Slack-Signature")
    raw_ts = c.headers.require("X-Slack-Request-Timestamp")
    timestamp = parse_unix_ts(raw_ts, "X-Slack-Request-Timestamp")
    if not value.startswith("v0="):
        raise Invalid("X-Slack-Signature does not start with v0=")
    digest = parse_hex(value[len("v0=") :], 32, "X-Slack-Signature")
    signed = f"v0:{raw_ts}:".encode() + c.body
    index = match_secret(c.keys, [digest], lambda s: hmac_digest(s.encode(), signed))
    stale = freshness(timestamp, c.now, past=SLACK_TOLERANCE, future=SLACK_TOLERANCE)
    return settle("slack", index, stale)


def _verify_shopify(c: Ctx) -> Verdict:
    # Newer event deliveries drop the X- prefix; prefer the classic name when both are sent.
    if c.headers.has("X-Shopify-Hmac-Sha256"):
        name = "X-Shopify-Hmac-Sha256"
    elif c.headers.has("shopify-hmac-sha256"):
        name = "shopify-hmac-sha256"
    else:
        raise Missing("no X-Shopify-Hmac-Sha256 header")
    digest = parse_b64(c.headers.primary(name), 32, name)
    index = match_secret(c.keys, [digest], lambda s: hmac_digest(s.encode(), c.body))
    return settle("shopify", index)


def _parse_sw_signatures(value: str, name: str) -> list[bytes]:
    v1: list[bytes] = []
    versions: list[str] = []
    for entry in value.split():
        version, comma, sig = entry.partition(",")
        if not comma:
            raise Invalid(f"{name} entry {show(entry)} has no comma; expected v1,<base64>")
        if not version or not sig:
            raise Invalid(f"{name} entry {show(entry)} is incomplete; expected v1,<base64>")
        versions.append(version)
        if version == "v1":
            v1.append(parse_b64(sig, 32, f"{name} v1 entry"))
    if not v1:
        if versions and all(v == "v1a" for v in versions):
            # v1a is the asymmetric (ed25519) variant: verifying needs the sender's public key,
            # which a bin's shared secrets are not. Not wrong, just not checkable here.
            raise Unchecked(
                f"{name} has only v1a (ed25519) signatures; only symmetric v1 signatures "
                "can be checked against this bin's secrets"
            )
        raise Invalid(f"{name} has no v1 entry")
    return v1


def _verify_standard(c: Ctx, provider: str, prefix: str) -> Verdict:
    sig_name, id_name, ts_name = (f"{prefix}-signature", f"{prefix}-id", f"{prefix}-timestamp")
    digests = _parse_sw_signatures(c.headers.primary(sig_name), sig_name)
    msg_id = c.headers.require(id_name)
    timestamp = parse_unix_ts(c.headers.require(ts_name), ts_name)
    signed = f"{msg_id}.{timestamp}.".encode() + c.body

    usable: list[tuple[int, bytes]] = []
    unusable: list[int] = []
    for index, secret in c.keys:
        key = sw_key(secret)
        if key is None:
            unusable.append(index)
        else:
            usable.append((index, key))
    if not usable:
        which = ", ".join(f"#{i}" for i in unusable)
        raise Invalid(
            f"this bin's secret {which} is not a {LABELS[provider]} secret "
            "(expected base64 after an optional whsec_ prefix)"
        )
    index = match_secret(usable, digests, lambda key: hmac_digest(key, signed))
    stale = freshness(
        timestamp,
        c.now,
        past=STANDARD_WEBHOOKS_TOLERANCE,
        future=STANDARD_WEBHOOKS_TOLERANCE,
    )
    verdict = settle(provider, index, stale)
    if index is None and unusable:
        skipped = ", ".join(f"#{i}" for i in unusable)
        verdict = Verdict(
            provider, verdict.status, f"{verdict.reason} (secret {skipped} skipped: not base64)"
        )
    return verdict


def _verify_standard_webhooks(c: Ctx) -> Verdict:
    return _verify_standard(c, "standard-webhooks", "webhook")


def _verify_svix(c: Ctx) -> Verdict:
    # Like the svix library: read svix-* headers, fall back to the webhook-* spelling.
    prefix = (
        "svix"
        if c.headers.has("svix-signature") or not c.headers.has("webhook-signature")
        else "webhook"
    )
    return _verify_standard(c, "svix", prefix)


def _verify_gitlab(c: Ctx) -> Verdict:
    # GitLab sends the secret itself. Header values reach us latin-1-decoded (WSGI), so compare
    # the raw bytes against the UTF-8 secret; that makes non-ASCII tokens work too.
    token = c.headers.primary("X-Gitlab-Token", ascii_only=False)
    provided = _wire_bytes(token)
    for index, secret in c.keys:
        if hmac.compare_digest(secret.encode(), provided):
            return Verdict(
                "gitlab",
                "valid",
                f"token matches this bin's secret #{index} (GitLab sends the secret itself, "
                "not a signature, so the body is not covered)",
            )
    return Verdict("gitlab", "invalid", "X-Gitlab-Token does not match any of this bin's secrets")


def _wire_bytes(value: str) -> bytes:
    """The bytes a header value had on the wire (WSGI decodes them as latin-1)."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def _verify_twitch(c: Ctx) -> Verdict:
    value = c.headers.primary("Twitch-Eventsub-Message-Signature")
    msg_id = c.headers.require("Twitch-Eventsub-Message-Id")
    raw_ts = c.headers.require("Twitch-Eventsub-Message-Timestamp")
    timestamp = parse_rfc3339(raw_ts, "Twitch-Eventsub-Message-Timestamp")
    if not value.startswith("sha256="):
        raise Invalid("Twitch-Eventsub-Message-Signature does not start with sha256=")
    digest = parse_hex(value[len("sha256=") :], 32, "Twitch-Eventsub-Message-Signature")
    signed = (msg_id + raw_ts).encode() + c.body  # no separators, timestamp exactly as sent
    index = match_secret(c.keys, [digest], lambda s: hmac_digest(s.encode(), signed))
    stale = freshness(timestamp, c.now, past=TWITCH_TOLERANCE, future=None)
    return settle("twitch", index, stale)


_VERIFIERS: dict[str, Callable[[Ctx], Verdict]] = {
    "github": _verify_github,
    "stripe": _verify_stripe,
    "slack": _verify_slack,
    "shopify": _verify_shopify,
    "standard-webhooks": _verify_standard_webhooks,
    "svix": _verify_svix,
    "gitlab": _verify_gitlab,
    "twilio": verify_twilio,
    "twitch": _verify_twitch,
}


def verify(
    provider: str,
    secrets: list[str],
    *,
    method: str,
    url: str,
    headers: list[tuple[str, str]],
    body: bytes,
    now: float,
) -> Verdict:
    """Check one captured request's webhook signature.

    ``provider`` is one of ``PROVIDERS`` or ``"auto"`` (detect from the headers). ``secrets`` is
    the bin's list of secrets; several mean key rotation and any match is valid (the reason names
    which, 1-based; empty strings are skipped but keep their position). ``url`` is the full public
    URL the sender called (Twilio signs it); ``now`` is the current unix time.

    Never raises.
    """
    try:
        h = Headers(headers)
    except Exception:
        return Verdict(None, "invalid", "the request headers could not be read")

    if provider == "auto":
        detected = detect(h)
        if detected is None:
            return Verdict(None, "missing", "no signature header from a known provider")
        provider = detected
    if provider not in _VERIFIERS:
        return Verdict(
            None,
            "unchecked",
            f"unknown provider {show(str(provider))}; known: {', '.join(PROVIDERS)}",
        )

    keys = [(i, s) for i, s in enumerate(secrets or (), 1) if isinstance(s, str) and s.strip()]
    if not keys:
        return Verdict(provider, "unchecked", "no secret configured")

    try:
        ctx = Ctx(
            headers=h,
            keys=keys,
            method=str(method or ""),
            url=str(url or ""),
            body=as_bytes(body),
            now=float(now),
        )
        return _VERIFIERS[provider](ctx)
    except Outcome as outcome:
        return Verdict(provider, outcome.status, outcome.reason)
    except Exception as exc:
        # Last resort: the parsers above are meant to reject everything malformed themselves,
        # but a webhook inspector must never 500 on a hostile request.
        return Verdict(
            provider,
            "invalid",
            f"the {LABELS[provider]} signature headers are malformed "
            f"(unexpected {type(exc).__name__} while parsing)",
        )
