"""Which rate limits this deployment has, read from the settings, each with its refusal text."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.config import Settings
from app.limits.limiter import Limiter, Sync
from app.limits.rates import parse_rate


def source_key(address: str | None) -> str:
    """The key an address is counted under: an IPv4 address itself, an IPv6 address's /64
    (one host usually holds a whole /64, so counting single addresses would not limit it)."""
    if address and ":" not in address:
        return address[:128]  # IPv4 (or unreadable): the address as the peer or proxy gave it
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return (address or "")[:128]  # the key column of the shared count holds 128 characters
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(frozen=True)
class Refusal:
    """A hit beyond a limit: the answer's error text and ``Retry-After`` seconds."""

    error: str
    retry_after: int


class Limit:
    """One configured limit: a shared ``Limiter`` plus what its refusals say."""

    def __init__(self, limiter: Limiter, what: str) -> None:
        self.limiter = limiter
        self._error = f"too many {what} (limit {limiter.rate})"

    def hit(self, key: str) -> Refusal | None:
        """Count a hit on ``key``; a Refusal when it is beyond the limit."""
        wait = self.limiter.hit(key)
        return None if wait is None else Refusal(self._error, wait)


@dataclass(frozen=True)
class Limits:
    """The limits on captures per bin and per source address, and on bin creation per source.
    None: that limit is off, and costs nothing."""

    bin: Limit | None = None
    source: Limit | None = None
    create: Limit | None = None


def build_limits(settings: Settings, sync: Sync, clock: Callable[[], float] = time.time) -> Limits:
    """The limits ``settings`` ask for, counted together through ``sync``.

    Raises ValueError naming the variable when a setting cannot be read.
    """
    made: dict[str, Limit | None] = {}
    for scope, value, variable, what in (
        ("bin", settings.bin_rate_limit, "HOOKBIN_BIN_RATE_LIMIT", "requests to this bin"),
        (
            "source",
            settings.source_rate_limit,
            "HOOKBIN_SOURCE_RATE_LIMIT",
            "requests from this address",
        ),
        (
            "create",
            settings.create_rate_limit,
            "HOOKBIN_CREATE_RATE_LIMIT",
            "bins made from this address",
        ),
    ):
        rate = parse_rate(value, variable)
        made[scope] = None if rate is None else Limit(Limiter(scope, rate, sync, clock), what)
    return Limits(**made)
