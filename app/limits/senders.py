"""Per-bin sender allowlists: addresses and CIDR ranges that may send, and what befalls others.

A bin's ``senders`` is a list of addresses and ranges (None: everyone may send);
``senders_action`` says what happens to a request from elsewhere: ``refuse`` (403, nothing
stored) or ``mark`` (stored with ``sender_unlisted``). The sender is the request's source
address after the trusted proxy hops (``HOOKBIN_PROXY_HOPS``), never a header a stranger sets.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ACTIONS = ("refuse", "mark")
DEFAULT_ACTION = "refuse"
MAX_SENDERS = 100


def parse_senders(value: Any) -> list[str] | None:
    """A sender list (addresses and CIDR ranges, as strings) in canonical spelling.

    A range is kept as the network it names (``203.0.113.7/24`` is ``203.0.113.0/24``); repeats
    are dropped, and an empty list is None (everyone may send). Raises ValueError saying which
    entry is wrong.
    """
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("senders must be a list of addresses and CIDR ranges (or null)")
    if len(value) > MAX_SENDERS:
        raise ValueError(f"senders may hold at most {MAX_SENDERS} addresses and ranges")
    out: list[str] = []
    for number, text in enumerate(value, 1):
        entry = _canonical(text, number)
        if entry not in out:
            out.append(entry)
    return out or None


def _canonical(text: str, number: int) -> str:
    try:
        if "%" in text:  # an interface-scoped address names no sender on another host
            raise ValueError(text)
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(
            f"senders #{number}: {text[:60]!r} is not an IPv4 or IPv6 address or CIDR range"
        ) from None
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def parse_action(value: Any) -> str:
    """``refuse`` or ``mark``; None is the default, ``refuse``."""
    if value is None:
        return DEFAULT_ACTION
    if value not in ACTIONS:
        raise ValueError('senders_action must be "refuse" or "mark"')
    return str(value)


@functools.lru_cache(maxsize=1024)
def _networks(senders: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(s) for s in senders)


def is_listed(senders: list[str] | tuple[str, ...], address: str | None) -> bool:
    """True when ``address`` falls in one of ``senders`` (an IPv4-mapped IPv6 address counts
    as the IPv4 address it carries); an address that cannot be read is never listed."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    networks = _networks(tuple(senders))
    if any(ip in network for network in networks):
        return True
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return mapped is not None and any(mapped in network for network in networks)


def unlisted(bin_: Mapping[str, Any], address: str | None) -> bool | None:
    """Whether the bin's sender list leaves ``address`` out; None when the bin has no list."""
    senders = bin_.get("senders")
    if not senders:
        return None
    return not is_listed(senders, address)
