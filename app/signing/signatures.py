"""Webhook signature checking and re-signing for the providers Hookbin recognises.

Pure functions: no Flask, no clock, no I/O. The caller passes the raw body bytes exactly as
received (every scheme signs those bytes; anything re-serialised no longer matches), the
headers as an ordered list of ``(name, value)`` pairs, the public URL the sender called (only
Twilio needs it) and the current unix time, so tests are deterministic.

``verify`` never raises: malformed input of any kind becomes ``status="invalid"`` with a reason a
person can act on. Every provider's parser is written to reject bad input explicitly; a last-resort
guard around each provider turns anything the parsers missed into "invalid" too.

Schemes (see docs/signatures.md in the shared docs for the full table):

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

import base64
import binascii
import hashlib
import hmac
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from secrets import token_hex
from typing import TypeVar
from urllib.parse import parse_qsl, urlsplit

_K = TypeVar("_K")  # a secret as configured (str) or already decoded (bytes)

__all__ = [
    "MISMATCH",
    "PROVIDERS",
    "Verdict",
    "detect_provider",
    "sign",
    "verify",
]

PROVIDERS = (
    "github",
    "stripe",
    "slack",
    "shopify",
    "standard-webhooks",
    "svix",
    "gitlab",
    "twilio",
    "twitch",
)

#: Human names for reasons ("the Stripe signature headers are malformed ...").
_LABELS = {
    "github": "GitHub",
    "stripe": "Stripe",
    "slack": "Slack",
    "shopify": "Shopify",
    "standard-webhooks": "Standard Webhooks",
    "svix": "Svix",
    "gitlab": "GitLab",
    "twilio": "Twilio",
    "twitch": "Twitch",
}

#: The one thing we can say when a MAC doesn't match: we cannot tell a wrong key from a changed
#: body, because both just produce a different digest.
MISMATCH = "signed with a different secret, or the body differs from what was signed"

#: Signature headers are short (a few digests at most). Anything longer is garbage or an attack;
#: refuse it before splitting or decoding so a 100 KB header costs nothing.
_MAX_HEADER_CHARS = 8192

#: Freshness windows in seconds, as each provider's own library/docs apply them.
STRIPE_TOLERANCE = 300  # past only, like stripe.WebhookSignature.verify_header
SLACK_TOLERANCE = 300  # abs(now - ts), like slack_sdk's SignatureVerifier
STANDARD_WEBHOOKS_TOLERANCE = 300  # both directions, like standardwebhooks / svix
TWITCH_TOLERANCE = 600  # "older than 10 minutes" per Twitch's EventSub docs; past only

_HEX_RE = re.compile(r"[0-9a-fA-F]+")
_B64_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_UNIX_RE = re.compile(r"[0-9]{1,12}")  # [0-9], not \d: \d also matches non-ASCII digits
_RFC3339_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one request's signature.

    ``status`` is one of ``"valid"``, ``"invalid"``, ``"missing"`` (the provider's signature
    header isn't there) or ``"unchecked"`` (nothing to check against, e.g. no secret configured).
    ``reason`` is a sentence for a person, e.g. ``"signed with this bin's secret #2"``.
    """

    provider: str | None
    status: str  # "valid" | "invalid" | "missing" | "unchecked"
    reason: str


# --------------------------------------------------------------------------------------------
# Internal plumbing
# --------------------------------------------------------------------------------------------


class _Outcome(Exception):
    """Raised by parsers to stop with a verdict; ``verify`` turns it into a ``Verdict``."""

    status = "invalid"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Invalid(_Outcome):
    status = "invalid"


class _Missing(_Outcome):
    status = "missing"


class _Unchecked(_Outcome):
    status = "unchecked"


def _show(value: str, limit: int = 40) -> str:
    """A short, safe rendering of untrusted input for a reason sentence."""
    if len(value) > limit:
        value = value[:limit] + "…"
    return repr(value)


class _Headers:
    """Case-insensitive view of a header list that keeps duplicates, so they can be refused."""

    def __init__(self, headers: Iterable[tuple[str, str]] | None) -> None:
        self._map: dict[str, list[str]] = {}
        for item in headers or ():
            # Be forgiving about what the capture layer hands us: skip anything that isn't a
            # pair, and read bytes the way WSGI does (latin-1), rather than failing the check.
            try:
                name, value = item
            except (TypeError, ValueError):
                continue
            if isinstance(name, bytes):
                name = name.decode("latin-1")
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            if not isinstance(name, str) or not isinstance(value, str):
                continue
            self._map.setdefault(name.strip().lower(), []).append(value)

    def has(self, name: str) -> bool:
        return name.lower() in self._map

    def names(self) -> Iterable[str]:
        return self._map.keys()

    def first(self, name: str) -> str | None:
        """Lenient lookup for headers that are context, not signature material."""
        values = self._map.get(name.lower())
        return values[0] if values else None

    def get(self, name: str, *, ascii_only: bool = True) -> str | None:
        """Strict lookup for signature material: ``None`` if absent, ``_Invalid`` if unusable.

        Duplicates are refused rather than "pick one": a sender sends each of these once, and
        guessing which copy counts is exactly the ambiguity an attacker would exploit.
        """
        values = self._map.get(name.lower())
        if values is None:
            return None
        if len(values) > 1:
            raise _Invalid(f"{name} appears {len(values)} times; expected exactly one")
        value = values[0]
        if len(value) > _MAX_HEADER_CHARS:
            raise _Invalid(
                f"{name} is {len(value)} characters long; refusing to parse more than "
                f"{_MAX_HEADER_CHARS}"
            )
        value = value.strip()
        if not value:
            raise _Invalid(f"{name} is empty")
        if ascii_only and not value.isascii():
            raise _Invalid(f"{name} contains non-ASCII characters")
        return value

    def require(self, name: str) -> str:
        """A header the scheme needs once a signature is present: absent means invalid."""
        value = self.get(name)
        if value is None:
            raise _Invalid(f"no {name} header")
        return value

    def primary(self, name: str, *, ascii_only: bool = True) -> str:
        """The signature header itself: absent means "missing" rather than "invalid"."""
        value = self.get(name, ascii_only=ascii_only)
        if value is None:
            raise _Missing(f"no {name} header")
        return value


@dataclass(frozen=True)
class _Ctx:
    """Everything a provider checker needs, already normalised."""

    headers: _Headers
    keys: list[tuple[int, str]]  # (1-based position in the bin's secret list, secret)
    method: str
    url: str
    body: bytes
    now: float


def _hmac(key: bytes, msg: bytes, digest: str = "sha256") -> bytes:
    return hmac.new(key, msg, digest).digest()


def _hex(value: str, nbytes: int, what: str) -> bytes:
    """Decode a hex digest of a known size, or explain why it isn't one."""
    if len(value) != 2 * nbytes or not _HEX_RE.fullmatch(value):
        raise _Invalid(f"{what} is not a {2 * nbytes}-character hex digest")
    return bytes.fromhex(value)


def _b64(value: str, nbytes: int, what: str) -> bytes:
    """Decode a base64 digest of a known size (padding optional), or explain why it isn't one."""
    if not _B64_RE.fullmatch(value):
        raise _Invalid(f"{what} is not valid base64")
    bare = value.rstrip("=")
    try:
        raw = base64.b64decode(bare + "=" * (-len(bare) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _Invalid(f"{what} is not valid base64") from None
    if len(raw) != nbytes:
        raise _Invalid(f"{what} decodes to {len(raw)} bytes; expected a {nbytes}-byte digest")
    return raw


def _unix_ts(value: str, what: str) -> int:
    """Parse a unix timestamp in whole seconds; providers never send signs, fractions or spaces."""
    if not _UNIX_RE.fullmatch(value):
        raise _Invalid(f"{what} {_show(value)} is not a unix timestamp")
    return int(value)


def _rfc3339(value: str, what: str) -> float:
    """Parse an RFC 3339 timestamp (Twitch sends nanoseconds, which datetime can't hold)."""
    m = _RFC3339_RE.fullmatch(value)
    if not m:
        raise _Invalid(f"{what} {_show(value)} is not an RFC 3339 timestamp")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    frac = float(m.group(7)) if m.group(7) else 0.0
    zone = m.group(8)
    try:
        if zone in ("Z", "z"):
            tz = UTC
        else:
            sign_ = 1 if zone[0] == "+" else -1
            tz = timezone(sign_ * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
        # Leap second "60" is legal RFC 3339; fold it into the next second instead of failing.
        leap = 1 if second == 60 else 0
        moment = datetime(year, month, day, hour, minute, second - leap, tzinfo=tz)
        epoch = moment.timestamp()
    except (ValueError, OverflowError):
        raise _Invalid(f"{what} {_show(value)} is not a real date and time") from None
    return epoch + leap + frac


def _freshness(ts: float, now: float, *, past: int, future: int | None) -> str | None:
    """Why ``ts`` is outside the window, or ``None`` if it is fresh enough."""
    age = now - ts
    if age > past:
        return f"timestamp {math.ceil(age)} s old, tolerance {past} s"
    if future is not None and -age > future:
        return f"timestamp {math.ceil(-age)} s in the future, tolerance {future} s"
    return None


def _match(
    keys: list[tuple[int, _K]],
    provided: list[bytes],
    compute: Callable[[_K], bytes],
) -> int | None:
    """The 1-based index of the first secret whose MAC equals any provided digest.

    Every secret is tried against every provided digest (key rotation on our side, several
    signatures on the sender's side); all comparisons are constant-time.
    """
    for index, secret in keys:
        expected = compute(secret)
        for candidate in provided:
            if hmac.compare_digest(expected, candidate):
                return index
    return None


def _settle(
    provider: str,
    index: int | None,
    stale: str | None = None,
    *,
    note: str = "",
) -> Verdict:
    """Turn "which secret matched" plus a freshness complaint into a verdict.

    The signature is checked before freshness so a stale replay of a genuine request says so
    ("timestamp 412 s old ...; the signature itself matches secret #1") instead of looking
    like a forgery.
    """
    if index is None:
        reason = MISMATCH + (f"; also, {stale}" if stale else "")
        return Verdict(provider, "invalid", reason)
    if stale:
        return Verdict(
            provider, "invalid", f"{stale}; the signature itself matches this bin's secret #{index}"
        )
    return Verdict(provider, "valid", f"signed with this bin's secret #{index}{note}")


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------


def _detect(h: _Headers) -> str | None:
    # Order matters: Svix also forwards webhook-* headers, and GitHub Apps relaying other
    # services could carry several; the most specific marker wins.
    if any(name.startswith("svix-") for name in h.names()):
        return "svix"
    if h.has("webhook-signature") or h.has("webhook-id"):
        return "standard-webhooks"
    if h.has("stripe-signature"):
        return "stripe"
    if h.has("x-slack-signature"):
        return "slack"
    if h.has("x-hub-signature-256") or h.has("x-hub-signature") or h.has("x-github-event"):
        return "github"
    if h.has("x-shopify-hmac-sha256") or h.has("shopify-hmac-sha256"):
        return "shopify"
    if h.has("x-gitlab-token") or h.has("x-gitlab-event"):
        return "gitlab"
    if h.has("x-twilio-signature"):
        return "twilio"
    if h.has("twitch-eventsub-message-signature"):
        return "twitch"
    return None


def detect_provider(headers: list[tuple[str, str]]) -> str | None:
    """Guess the sender from the headers present (names compared case-insensitively)."""
    try:
        return _detect(_Headers(headers))
    except Exception:  # detection is a convenience; never let it break a request view
        return None


# --------------------------------------------------------------------------------------------
# Verifiers, one per provider
# --------------------------------------------------------------------------------------------


def _verify_github(c: _Ctx) -> Verdict:
    value = c.headers.get("X-Hub-Signature-256")
    if value is not None:
        if not value.startswith("sha256="):
            raise _Invalid("X-Hub-Signature-256 does not start with sha256=")
        digest = _hex(value[len("sha256=") :], 32, "X-Hub-Signature-256")
        index = _match(c.keys, [digest], lambda s: _hmac(s.encode(), c.body))
        return _settle("github", index)
    legacy = c.headers.get("X-Hub-Signature")
    if legacy is None:
        raise _Missing("no X-Hub-Signature-256 header")
    if not legacy.startswith("sha1="):
        raise _Invalid("X-Hub-Signature does not start with sha1=")
    digest = _hex(legacy[len("sha1=") :], 20, "X-Hub-Signature")
    index = _match(c.keys, [digest], lambda s: _hmac(s.encode(), c.body, "sha1"))
    return _settle(
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
            raise _Invalid("Stripe-Signature has an empty item (stray comma)")
        key, eq, val = item.partition("=")
        if not eq:
            raise _Invalid(f"Stripe-Signature item {_show(item)} has no '='")
        if key == "t":
            if timestamp is not None:
                raise _Invalid("Stripe-Signature has more than one t= entry")
            timestamp = _unix_ts(val, "Stripe-Signature t=")
        elif key == "v1":
            v1.append(_hex(val, 32, "Stripe-Signature v1= entry"))
        # v0 (test-mode legacy) and unknown schemes are ignored, as Stripe's library does.
    if timestamp is None:
        raise _Invalid("Stripe-Signature has no t= entry")
    if not v1:
        raise _Invalid("Stripe-Signature has no v1= entry")
    return timestamp, v1


def _verify_stripe(c: _Ctx) -> Verdict:
    timestamp, v1 = _parse_stripe(c.headers.primary("Stripe-Signature"))
    signed = f"{timestamp}.".encode() + c.body
    # The key is the whole "whsec_..." string as UTF-8 -- Stripe does NOT base64-decode it,
    # unlike Standard Webhooks/Svix whose secrets look the same.
    index = _match(c.keys, v1, lambda s: _hmac(s.encode(), signed))
    stale = _freshness(timestamp, c.now, past=STRIPE_TOLERANCE, future=None)
    return _settle("stripe", index, stale)


def _verify_slack(c: _Ctx) -> Verdict:
    value = c.headers.primary("X-Slack-Signature")
    raw_ts = c.headers.require("X-Slack-Request-Timestamp")
    timestamp = _unix_ts(raw_ts, "X-Slack-Request-Timestamp")
    if not value.startswith("v0="):
        raise _Invalid("X-Slack-Signature does not start with v0=")
    digest = _hex(value[len("v0=") :], 32, "X-Slack-Signature")
    signed = f"v0:{raw_ts}:".encode() + c.body
    index = _match(c.keys, [digest], lambda s: _hmac(s.encode(), signed))
    stale = _freshness(timestamp, c.now, past=SLACK_TOLERANCE, future=SLACK_TOLERANCE)
    return _settle("slack", index, stale)


def _verify_shopify(c: _Ctx) -> Verdict:
    # Newer event deliveries drop the X- prefix; prefer the classic name when both are sent.
    if c.headers.has("X-Shopify-Hmac-Sha256"):
        name = "X-Shopify-Hmac-Sha256"
    elif c.headers.has("shopify-hmac-sha256"):
        name = "shopify-hmac-sha256"
    else:
        raise _Missing("no X-Shopify-Hmac-Sha256 header")
    digest = _b64(c.headers.primary(name), 32, name)
    index = _match(c.keys, [digest], lambda s: _hmac(s.encode(), c.body))
    return _settle("shopify", index)


def _sw_key(secret: str) -> bytes | None:
    """A Standard Webhooks key: optional whsec_ prefix, then base64. ``None`` if unusable."""
    text = secret.strip()
    text = text.removeprefix("whsec_")
    bare = text.rstrip("=")
    if not bare or not _B64_RE.fullmatch(bare):
        return None
    try:
        key = base64.b64decode(bare + "=" * (-len(bare) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return key or None


def _parse_sw_signatures(value: str, name: str) -> list[bytes]:
    v1: list[bytes] = []
    versions: list[str] = []
    for entry in value.split():
        version, comma, sig = entry.partition(",")
        if not comma:
            raise _Invalid(f"{name} entry {_show(entry)} has no comma; expected v1,<base64>")
        if not version or not sig:
            raise _Invalid(f"{name} entry {_show(entry)} is incomplete; expected v1,<base64>")
        versions.append(version)
        if version == "v1":
            v1.append(_b64(sig, 32, f"{name} v1 entry"))
    if not v1:
        if versions and all(v == "v1a" for v in versions):
            # v1a is the asymmetric (ed25519) variant: verifying needs the sender's public key,
            # which a bin's shared secrets are not. Not wrong, just not checkable here.
            raise _Unchecked(
                f"{name} has only v1a (ed25519) signatures; only symmetric v1 signatures "
                "can be checked against this bin's secrets"
            )
        raise _Invalid(f"{name} has no v1 entry")
    return v1


def _verify_standard(c: _Ctx, provider: str, prefix: str) -> Verdict:
    sig_name, id_name, ts_name = (f"{prefix}-signature", f"{prefix}-id", f"{prefix}-timestamp")
    digests = _parse_sw_signatures(c.headers.primary(sig_name), sig_name)
    msg_id = c.headers.require(id_name)
    timestamp = _unix_ts(c.headers.require(ts_name), ts_name)
    signed = f"{msg_id}.{timestamp}.".encode() + c.body

    usable: list[tuple[int, bytes]] = []
    unusable: list[int] = []
    for index, secret in c.keys:
        key = _sw_key(secret)
        if key is None:
            unusable.append(index)
        else:
            usable.append((index, key))
    if not usable:
        which = ", ".join(f"#{i}" for i in unusable)
        raise _Invalid(
            f"this bin's secret {which} is not a {_LABELS[provider]} secret "
            "(expected base64 after an optional whsec_ prefix)"
        )
    index = _match(usable, digests, lambda key: _hmac(key, signed))
    stale = _freshness(
        timestamp,
        c.now,
        past=STANDARD_WEBHOOKS_TOLERANCE,
        future=STANDARD_WEBHOOKS_TOLERANCE,
    )
    verdict = _settle(provider, index, stale)
    if index is None and unusable:
        skipped = ", ".join(f"#{i}" for i in unusable)
        verdict = Verdict(
            provider, verdict.status, f"{verdict.reason} (secret {skipped} skipped: not base64)"
        )
    return verdict


def _verify_standard_webhooks(c: _Ctx) -> Verdict:
    return _verify_standard(c, "standard-webhooks", "webhook")


def _verify_svix(c: _Ctx) -> Verdict:
    # Like the svix library: read svix-* headers, fall back to the webhook-* spelling.
    prefix = (
        "svix"
        if c.headers.has("svix-signature") or not c.headers.has("webhook-signature")
        else "webhook"
    )
    return _verify_standard(c, "svix", prefix)


def _verify_gitlab(c: _Ctx) -> Verdict:
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


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _twilio_urls(url: str) -> list[tuple[str, str]]:
    """The URL as given, plus it with the default port added or removed.

    Twilio's own validator tries both because "their back end is inconsistent" about whether
    the default port is part of the signed URL. Returns ``(url, note)`` pairs.
    """
    if not url:
        raise _Invalid("no public URL known for this request; a Twilio signature covers the URL")
    if len(url) > 16384:
        raise _Invalid("the request URL is too long to check")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _Invalid(f"the request URL {_show(url)} cannot be parsed") from None
    if not parts.scheme or not parts.netloc:
        raise _Invalid(f"the request URL {_show(url)} is not absolute")
    candidates = [(url, "")]
    default = _DEFAULT_PORTS.get(parts.scheme.lower())
    start = url.find("//") + 2
    if default is None or url[start : start + len(parts.netloc)] != parts.netloc:
        return candidates
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if port is None and not hostport.endswith(":"):
        netloc = f"{userinfo}{at}{hostport}:{default}"
        note = f" (matched the URL with :{default} added)"
    elif port == default:
        netloc = f"{userinfo}{at}{hostport[: hostport.rfind(':')]}"
        note = f" (matched the URL without :{default})"
    else:
        return candidates
    candidates.append((url[:start] + netloc + url[start + len(parts.netloc) :], note))
    return candidates


def _twilio_params(h: _Headers, method: str, body: bytes) -> list[tuple[str, str]]:
    """Form parameters Twilio appends to the signed string (none for GET or non-form bodies)."""
    if method.upper() in ("GET", "HEAD"):
        return []
    ctype = (h.first("content-type") or "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        return []
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _Invalid("the form body is not UTF-8, so its parameters cannot be read") from None
    return parse_qsl(text, keep_blank_values=True)


def _twilio_string(url: str, params: list[tuple[str, str]]) -> bytes:
    """URL followed by name+value for each parameter, sorted by name then value.

    Mirrors twilio's RequestValidator.compute_signature, including its quirk of counting a
    repeated identical name=value pair once (``sorted(set(values))``).
    """
    grouped: dict[str, set[str]] = {}
    for name, value in params:
        grouped.setdefault(name, set()).add(value)
    tail = "".join(name + value for name in sorted(grouped) for value in sorted(grouped[name]))
    return (url + tail).encode("utf-8")


def _twilio_algorithm(h: _Headers) -> str:
    """SHA1 normally; SharedKey webhooks name their algorithm in a settings header."""
    settings = h.get("X-Twilio-Webhooks-Signature-Settings")
    if settings is None:
        return "sha1"
    for part in settings.split(","):
        name, eq, value = part.partition("=")
        if eq and name.strip() == "algorithm" and value.strip():
            algo = value.strip().upper()
            if algo == "HMAC_SHA1":
                return "sha1"
            if algo == "HMAC_SHA256":
                return "sha256"
            raise _Invalid(f"Twilio signature algorithm {_show(value.strip())} is not supported")
    return "sha1"


def _verify_twilio(c: _Ctx) -> Verdict:
    value = c.headers.primary("X-Twilio-Signature")
    algorithm = _twilio_algorithm(c.headers)
    digest = _b64(value, 20 if algorithm == "sha1" else 32, "X-Twilio-Signature")
    urls = _twilio_urls(c.url)
    query = parse_qsl(urlsplit(c.url).query, keep_blank_values=True)
    body_hashes = [v for k, v in query if k == "bodySHA256"]
    # JSON (non-form) bodies: the body is bound via bodySHA256 in the signed URL, not appended.
    params = [] if body_hashes else _twilio_params(c.headers, c.method, c.body)

    for url, url_note in urls:
        signed = _twilio_string(url, params)
        index = _match(c.keys, [digest], lambda s, m=signed: _hmac(s.encode(), m, algorithm))
        if index is None:
            continue
        if body_hashes:
            if len(body_hashes) > 1:
                raise _Invalid("the URL has more than one bodySHA256 parameter")
            actual = hashlib.sha256(c.body).hexdigest().encode()
            if not hmac.compare_digest(actual, body_hashes[0].strip().lower().encode()):
                raise _Invalid(
                    f"the body's SHA-256 differs from the bodySHA256 in the URL, so the body "
                    f"changed after signing; the URL signature itself matches this bin's "
                    f"secret #{index}"
                )
            return _settle("twilio", index, note=url_note + "; the body matches bodySHA256")
        note = url_note
        if c.body and not params:
            note += "; the signature covers only the URL, the body is not signed"
        return _settle("twilio", index, note=note)
    return _settle("twilio", None)


def _verify_twitch(c: _Ctx) -> Verdict:
    value = c.headers.primary("Twitch-Eventsub-Message-Signature")
    msg_id = c.headers.require("Twitch-Eventsub-Message-Id")
    raw_ts = c.headers.require("Twitch-Eventsub-Message-Timestamp")
    timestamp = _rfc3339(raw_ts, "Twitch-Eventsub-Message-Timestamp")
    if not value.startswith("sha256="):
        raise _Invalid("Twitch-Eventsub-Message-Signature does not start with sha256=")
    digest = _hex(value[len("sha256=") :], 32, "Twitch-Eventsub-Message-Signature")
    signed = (msg_id + raw_ts).encode() + c.body  # no separators, timestamp exactly as sent
    index = _match(c.keys, [digest], lambda s: _hmac(s.encode(), signed))
    stale = _freshness(timestamp, c.now, past=TWITCH_TOLERANCE, future=None)
    return _settle("twitch", index, stale)


_VERIFIERS: dict[str, Callable[[_Ctx], Verdict]] = {
    "github": _verify_github,
    "stripe": _verify_stripe,
    "slack": _verify_slack,
    "shopify": _verify_shopify,
    "standard-webhooks": _verify_standard_webhooks,
    "svix": _verify_svix,
    "gitlab": _verify_gitlab,
    "twilio": _verify_twilio,
    "twitch": _verify_twitch,
}


def _as_bytes(body: object) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return bytes(body)  # type: ignore[call-overload]  # bytearray / memoryview


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
        h = _Headers(headers)
    except Exception:
        return Verdict(None, "invalid", "the request headers could not be read")

    if provider == "auto":
        detected = _detect(h)
        if detected is None:
            return Verdict(None, "missing", "no signature header from a known provider")
        provider = detected
    if provider not in _VERIFIERS:
        return Verdict(
            None,
            "unchecked",
            f"unknown provider {_show(str(provider))}; known: {', '.join(PROVIDERS)}",
        )

    keys = [(i, s) for i, s in enumerate(secrets or (), 1) if isinstance(s, str) and s.strip()]
    if not keys:
        return Verdict(provider, "unchecked", "no secret configured")

    try:
        ctx = _Ctx(
            headers=h,
            keys=keys,
            method=str(method or ""),
            url=str(url or ""),
            body=_as_bytes(body),
            now=float(now),
        )
        return _VERIFIERS[provider](ctx)
    except _Outcome as outcome:
        return Verdict(provider, outcome.status, outcome.reason)
    except Exception as exc:
        # Last resort: the parsers above are meant to reject everything malformed themselves,
        # but a webhook inspector must never 500 on a hostile request.
        return Verdict(
            provider,
            "invalid",
            f"the {_LABELS[provider]} signature headers are malformed "
            f"(unexpected {type(exc).__name__} while parsing)",
        )


# --------------------------------------------------------------------------------------------
# Signing (re-sign a replay with a fresh timestamp)
# --------------------------------------------------------------------------------------------


def _rfc3339_now(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _sign_standard(
    prefix: str, secret: str, body: bytes, now: float, h: _Headers
) -> list[tuple[str, str]]:
    key = _sw_key(secret)
    if key is None:
        raise ValueError("secret is not base64 after an optional whsec_ prefix")
    # Keep the message id: receivers dedupe on it, and a replay is the same message.
    msg_id = (h.first(f"{prefix}-id") or "").strip() or f"msg_{token_hex(14)}"
    timestamp = str(int(now))
    mac = _hmac(key, f"{msg_id}.{timestamp}.".encode() + body)
    return [
        (f"{prefix}-id", msg_id),
        (f"{prefix}-timestamp", timestamp),
        (f"{prefix}-signature", "v1," + base64.b64encode(mac).decode()),
    ]


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
    h = _Headers(headers)
    if provider == "auto":
        detected = _detect(h)
        if detected is None:
            raise ValueError("no signature header from a known provider to re-sign")
        provider = detected
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}")
    if not secret:
        raise ValueError("no secret to sign with")
    body = _as_bytes(body)
    key = secret.encode()

    if provider == "github":
        out = [("X-Hub-Signature-256", "sha256=" + _hmac(key, body).hex())]
        if h.has("X-Hub-Signature"):
            out.append(("X-Hub-Signature", "sha1=" + _hmac(key, body, "sha1").hex()))
        return out
    if provider == "stripe":
        timestamp = int(now)
        mac = _hmac(key, f"{timestamp}.".encode() + body).hex()
        return [("Stripe-Signature", f"t={timestamp},v1={mac}")]
    if provider == "slack":
        timestamp = str(int(now))
        mac = _hmac(key, f"v0:{timestamp}:".encode() + body).hex()
        return [("X-Slack-Request-Timestamp", timestamp), ("X-Slack-Signature", f"v0={mac}")]
    if provider == "shopify":
        value = base64.b64encode(_hmac(key, body)).decode()
        names = [n for n in ("X-Shopify-Hmac-Sha256", "shopify-hmac-sha256") if h.has(n)]
        return [(n, value) for n in names or ["X-Shopify-Hmac-Sha256"]]
    if provider == "standard-webhooks":
        return _sign_standard("webhook", secret, body, now, h)
    if provider == "svix":
        return _sign_standard("svix", secret, body, now, h)
    if provider == "gitlab":
        return [("X-Gitlab-Token", secret)]
    if provider == "twilio":
        if not url:
            raise ValueError("a Twilio signature covers the URL; pass the URL being called")
        try:
            algorithm = _twilio_algorithm(h)
            has_body_hash = any(k == "bodySHA256" for k, _ in parse_qsl(urlsplit(url).query))
            params = [] if has_body_hash else _twilio_params(h, method, body)
        except _Outcome as outcome:
            raise ValueError(outcome.reason) from None
        mac = _hmac(key, _twilio_string(url, params), algorithm)
        return [("X-Twilio-Signature", base64.b64encode(mac).decode())]
    # twitch
    msg_id = (h.first("Twitch-Eventsub-Message-Id") or "").strip() or token_hex(16)
    timestamp = _rfc3339_now(now)
    mac = _hmac(key, (msg_id + timestamp).encode() + body).hex()
    return [
        ("Twitch-Eventsub-Message-Id", msg_id),
        ("Twitch-Eventsub-Message-Timestamp", timestamp),
        ("Twitch-Eventsub-Message-Signature", f"sha256={mac}"),
    ]
