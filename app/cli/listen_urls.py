"""Where ``hookbin listen`` talks to: the server's base URL, and the local target's URLs."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

import httpx

from app.delivery.client import final_url
from app.delivery.policy import DEFAULT_PORTS, VettedTarget, is_capture_path
from app.delivery.replay import suffix_of


def server_base(url: str) -> str:
    """The server URL without a trailing slash; ValueError when it is not an http(s) URL."""
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    if parsed.query or parsed.fragment:
        raise ValueError(f"{url!r} must not have a query or fragment")
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, parsed.path.rstrip("/"), "", ""))


def quoted(bin_id: str) -> str:
    """``bin_id`` as one path segment of an API URL."""
    return urllib.parse.quote(bin_id, safe="")


def local_target(url: str) -> VettedTarget:
    """The ``--forward-to`` URL as the outbound client takes it; ValueError when unusable.

    No target policy applies here: the target is the developer's own machine. The "address" is
    the host name itself, so the name is resolved the ordinary way (``localhost`` reaches
    whichever of ``::1`` and ``127.0.0.1`` the local server listens on).
    """
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise ValueError(f"{url!r} is not a valid URL: {exc}") from None
    if parsed.scheme not in DEFAULT_PORTS:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    host = parsed.raw_host.decode("ascii")
    if not host:
        raise ValueError(f"{url!r} has no host")
    port = parsed.port if parsed.port is not None else DEFAULT_PORTS[parsed.scheme]
    return VettedTarget(url=parsed, host=host, port=port, address=host, scheme=parsed.scheme)


def forwards_into_capture(forward_to: str, server: str) -> bool:
    """True when ``forward_to`` is a capture URL of ``server`` itself (an endless loop)."""
    target = urllib.parse.urlsplit(forward_to.strip())
    base = urllib.parse.urlsplit(server_base(server))
    same_origin = (target.scheme, target.netloc.lower()) == (base.scheme, base.netloc.lower())
    return same_origin and is_capture_path(target.path, base.path + "/h/")


def local_url(forward_to: str, item: Mapping[str, Any]) -> str:
    """Where request ``item`` goes: the target URL plus its sub-path and raw query.

    Built exactly as a server-side replay builds it (the same ``suffix_of`` and ``final_url``).
    """
    return str(final_url(httpx.URL(forward_to), suffix_of(dict(item))))
