"""What every signature scheme shares: the verdict, header access, digest and timestamp parsing.

Pure functions: no Flask, no clock, no I/O. Parsers reject bad input by raising ``Invalid``,
``Missing`` or ``Unchecked`` with a reason a person can act on; ``verify`` turns those into a
``Verdict``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import TypeVar

__all__ = [
    "LABELS",
    "MISMATCH",
    "PROVIDERS",
    "Ctx",
    "Headers",
    "Invalid",
    "Missing",
    "Outcome",
    "Unchecked",
    "Verdict",
    "detect",
    "freshness",
    "hmac_digest",
    "match_secret",
    "parse_b64",
    "parse_hex",
    "parse_rfc3339",
    "parse_unix_ts",
    "settle",
    "show",
    "sw_key",
]

_K = TypeVar("_K")  # a secret as configured (str) or already decoded (bytes)

#: The providers Hookbin can check and re-sign, as named in a bin's signing settings.
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
LABELS = {
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


class Outcome(Exception):
    """Raised by parsers to stop with a verdict; ``verify`` turns it into a ``Verdict``."""

    status = "invalid"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Invalid(Outcome):
    """The request carries signature material that is wrong or unusable."""

    status = "invalid"


class Missing(Outcome):
    """The provider's signature header is absent."""

    status = "missing"


class Unchecked(Outcome):
    """There is a signature, but nothing this bin holds can check it."""

    status = "unchecked"


def show(value: str, limit: int = 40) -> str:
    """A short, safe rendering of untrusted input for a reason sentence."""
    if len(value) > limit:
        value = value[:limit] + "…"
    return repr(value)


class Headers:
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
        """Whether a header of that name is present at all."""
        return name.lower() in self._map

    def names(self) -> Iterable[str]:
        """The lower-cased names present."""
        return self._map.keys()

    def first(self, name: str) -> str | None:
        """Lenient lookup for headers that are context, not signature material."""
        values = self._map.get(name.lower())
        return values[0] if values else None

    def get(self, name: str, *, ascii_only: bool = True) -> str | None:
        """Strict lookup for signature material: ``None`` if absent, ``Invalid`` if unusable.

        Duplicates are refused rather than "pick one": a sender sends each of these once, and
        guessing which copy counts is exactly the ambiguity an attacker would exploit.
        """
        values = self._map.get(name.lower())
        if values is None:
            return None
        if len(values) > 1:
            raise Invalid(f"{name} appears {len(values)} times; expected exactly one")
        value = values[0]
        if len(value) > _MAX_HEADER_CHARS:
            raise Invalid(
                f"{name} is {len(value)} characters long; refusing to parse more than "
                f"{_MAX_HEADER_CHARS}"
            )
        value = value.strip()
        if not value:
            raise Invalid(f"{name} is empty")
        if ascii_only and not value.isascii():
            raise Invalid(f"{name} contains non-ASCII characters")
        return value

    def require(self, name: str) -> str:
        """A header the scheme needs once a signature is present: absent means invalid."""
        value = self.get(name)
        if value is None:
            raise Invalid(f"no {name} header")
        return value

    def primary(self, name: str, *, ascii_only: bool = True) -> str:
        """The signature header itself: absent means "missing" rather than "invalid"."""
        value = self.get(name, ascii_only=ascii_only)
        if value is None:
            raise Missing(f"no {name} header")
        return value


@dataclass(frozen=True)
class Ctx:
    """Everything a provider checker needs, already normalised."""

    headers: Headers
    keys: list[tuple[int, str]]  # (1-based position in the bin's secret list, secret)
    method: str
    url: str
    body: bytes
    now: float


def hmac_digest(key: bytes, msg: bytes, digest: str = "sha256") -> bytes:
    """The raw HMAC of ``msg`` under ``key``."""
    return hmac.new(key, msg, digest).digest()


def parse_hex(value: str, nbytes: int, what: str) -> bytes:
    """Decode a hex digest of a known size, or explain why it isn't one."""
    if len(value) != 2 * nbytes or not _HEX_RE.fullmatch(value):
        raise Invalid(f"{what} is not a {2 * nbytes}-character hex digest")
    return bytes.fromhex(value)


def parse_b64(value: str, nbytes: int, what: str) -> bytes:
    """Decode a base64 digest of a known size (padding optional), or explain why it isn't one."""
    if not _B64_RE.fullmatch(value):
        raise Invalid(f"{what} is not valid base64")
    bare = value.rstrip("=")
    try:
        raw = base64.b64decode(bare + "=" * (-len(bare) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(f"{what} is not valid base64") from None
    if len(raw) != nbytes:
        raise Invalid(f"{what} decodes to {len(raw)} bytes; expected a {nbytes}-byte digest")
    return raw


def parse_unix_ts(value: str, what: str) -> int:
    """Parse a unix timestamp in whole seconds; providers never send signs, fractions or spaces."""
    if not _UNIX_RE.fullmatch(value):
        raise Invalid(f"{what} {show(value)} is not a unix timestamp")
    return int(value)


def parse_rfc3339(value: str, what: str) -> float:
    """Parse an RFC 3339 timestamp (Twitch sends nanoseconds, which datetime can't hold)."""
    m = _RFC3339_RE.fullmatch(value)
    if not m:
        raise Invalid(f"{what} {show(value)} is not an RFC 3339 timestamp")
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
        raise Invalid(f"{what} {show(value)} is not a real date and time") from None
    return epoch + leap + frac


def freshness(ts: float, now: float, *, past: int, future: int | None) -> str | None:
    """Why ``ts`` is outside the window, or ``None`` if it is fresh enough."""
    age = now - ts
    if age > past:
        return f"timestamp {math.ceil(age)} s old, tolerance {past} s"
    if future is not None and -age > future:
        return f"timestamp {math.ceil(-age)} s in the future, tolerance {future} s"
    return None


def match_secret(
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


def settle(
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


def sw_key(secret: str) -> bytes | None:
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


def detect(h: Headers) -> str | None:
    """The provider whose marker headers are present, most specific first; ``None`` if none."""
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
