"""The secrets that open bins, and how they are checked.

A bin's API token is random and only its SHA-256 is stored, so it is shown once. The key in a bin's
view URL is derived from the deployment's own secret and a per-bin salt, so whoever holds the bin
can copy the link again, and a new salt revokes every old link. Share links are random, hashed
like tokens, and revocable one by one. Every comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

TOKEN_PREFIX = "hbt_"  # noqa: S105 - a prefix, not a secret
SHARE_PREFIX = "hbs_"
PAGE_KEY_PREFIX = "hbk_"


def new_token() -> str:
    """A bin's API token: 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_share_key() -> str:
    """The key of a read-only share link: 256 random bits."""
    return SHARE_PREFIX + secrets.token_urlsafe(32)


def new_salt() -> str:
    """A bin's view-link salt."""
    return secrets.token_urlsafe(16)


def digest(secret: str) -> str:
    """The SHA-256 (hex) under which a token or share key is stored."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def token_matches(secret: str, stored_digest: str | None) -> bool:
    """Whether ``secret`` is the token stored as ``stored_digest`` (constant time)."""
    if not stored_digest:
        return False
    return hmac.compare_digest(digest(secret), stored_digest)


def is_operator(secret: str, operator_tokens: Iterable[str]) -> bool:
    """Whether ``secret`` is one of the operator tokens; every one is compared, in constant time."""
    given = digest(secret).encode()
    found = False
    for token in operator_tokens:
        found |= hmac.compare_digest(given, digest(token).encode())
    return found


def page_key(deployment_key: str, bin_id: str, salt: str) -> str:
    """The key in bin ``bin_id``'s view URL."""
    mac = hmac.new(deployment_key.encode(), f"page:{bin_id}:{salt}".encode(), hashlib.sha256)
    return PAGE_KEY_PREFIX + mac.hexdigest()[:43]


def page_key_matches(deployment_key: str, bin_id: str, salt: str | None, given: str) -> bool:
    """Whether ``given`` is the current key of bin ``bin_id``'s view URL (constant time)."""
    if not salt:
        return False
    return hmac.compare_digest(page_key(deployment_key, bin_id, salt).encode(), given.encode())
