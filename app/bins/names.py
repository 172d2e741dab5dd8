"""Chosen bin names: the rule they follow, the words they may not take, creating bins by name.

A named bin's name is its id, so it is the URL segment of its capture URL (``/h/<name>``) and of
its page (``/bins/<name>``). Random ids (``ids.new_bin_id``) are 22 URL-safe base64 characters
and may contain capitals and underscores, which names never do; a random id can still happen to
spell a valid name, so creation relies on the primary key, not on the two shapes, to keep them
apart.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from werkzeug.routing import Map

from app.storage.repository import BinExists, Storage

#: The rule, as users are told it.
NAME_RULE = (
    "3 to 63 characters: lowercase letters a-z, digits 0-9 and hyphens, "
    "starting and ending with a letter or digit"
)
# A DNS label's alphabet and length, at least 3 characters long: safe unescaped in any URL (and
# in a hostname, should bins ever get subdomains), and with one spelling per name, since URLs
# are case-sensitive and "Stripe" and "stripe" would otherwise be two different bins.
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")

#: Names refused whatever routes the app has today: its own path prefixes, and words a future
#: version or a reverse proxy in front of it is likely to want for itself.
FIXED_RESERVED = frozenset(
    {
        "admin",
        "api",
        "assets",
        "auth",
        "b",
        "bin",
        "bins",
        "docs",
        "h",
        "health",
        "healthz",
        "hookbin",
        "login",
        "logout",
        "metrics",
        "new",
        "openapi",
        "settings",
        "static",
        "status",
        "ws",
        "www",
    }
)


class NameRefused(ValueError):
    """A chosen name cannot be used; ``status`` is the HTTP status that says why."""

    status = 400


class InvalidName(NameRefused):
    """The name breaks the rule or is reserved."""

    status = 400


class NameTaken(NameRefused):
    """A bin with this name exists already."""

    status = 409


def route_segments(url_map: Map) -> set[str]:
    """The first path segment of every route the app has (``api``, ``bins``, ``static``, ...).

    Derived from the routing table rather than written down, so that a route added later
    reserves its prefix by itself instead of colliding silently with a bin of that name.
    """
    out: set[str] = set()
    for rule in url_map.iter_rules():
        first = rule.rule.lstrip("/").split("/", 1)[0]
        if first and "<" not in first:
            out.add(first.lower())
    return out


def reserved_names(url_map: Map) -> frozenset[str]:
    """Every name a bin may not take in an app with ``url_map``."""
    return FIXED_RESERVED | route_segments(url_map)


def _shown(name: str) -> str:
    # The name goes back into a message; keep it short (it is escaped wherever it is shown).
    return name if len(name) <= 70 else name[:67] + "..."


def check_name(name: str, reserved: Collection[str]) -> str:
    """``name`` when it may name a bin; raises InvalidName with the rule otherwise."""
    if name in reserved:
        raise InvalidName(
            f'"{_shown(name)}" is reserved (Hookbin uses it, or may, for its own paths); '
            "choose another name"
        )
    if not _NAME.fullmatch(name):
        raise InvalidName(f'"{_shown(name)}" is not a valid bin name: use {NAME_RULE}')
    return name


def create_bin(
    storage: Storage, name: str | None, url_map: Map, **secrets: str | None
) -> dict[str, Any]:
    """Create a bin called ``name``, or with a random id when ``name`` is None.

    ``secrets`` are the digests ``Storage.create_bin`` keeps (``token_hash``, ``page_key_salt``).
    Raises InvalidName (400) or NameTaken (409), each with a message meant for the user.
    """
    if name is None:
        return storage.create_bin(**secrets)
    check_name(name, reserved_names(url_map))
    try:
        return storage.create_bin(name, **secrets)
    except BinExists:
        raise NameTaken(f'a bin named "{name}" exists already; choose another name') from None
