"""Who may read operator pages (``/metrics``): loopback, or a holder of an admin token.

A request counts as local only when its peer address is loopback and it did not come through
a proxy Hookbin does not trust (``HOOKBIN_PROXY_HOPS``): a reverse proxy on the same host
connects from 127.0.0.1 on behalf of anyone.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

_FORWARDING_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


def is_loopback(address: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback; False for anything else or nothing."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def is_local(environ: dict[str, Any], proxy_hops: int) -> bool:
    """The request came from this host itself, not through an untrusted proxy."""
    if not is_loopback(environ.get("REMOTE_ADDR")):
        return False
    # With trusted proxies, ProxyFix has put the real client into REMOTE_ADDR already.
    return proxy_hops > 0 or not any(environ.get(h) for h in _FORWARDING_HEADERS)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def token_matches(presented: str, tokens: tuple[str, ...]) -> bool:
    """Constant-time check of ``presented`` against every configured token."""
    given = presented.encode("utf-8", "surrogateescape")
    matched = False
    for token in tokens:
        # Every token is compared, so the time taken does not tell which one matched.
        matched |= hmac.compare_digest(given, token.encode("utf-8", "surrogateescape"))
    return matched
