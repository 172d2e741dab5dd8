"""What one request may do with one bin, from the credentials it carries.

Plain functions over what the web layer hands in (the bearer secret, the cookie's grants, a way to
look share keys up), so the rules can be read and tested without Flask.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from app.access import keys


class Grant(enum.IntEnum):
    """Ordered: a grant allows everything a lower one does."""

    NONE = 0
    READ = 1  # see the bin and its requests (a share link)
    MANAGE = 2  # also change, clear, delete, replay and forward


@dataclass(frozen=True)
class Credentials:
    """What a request presented: a bearer secret (header or ``?token=``) and the cookie's grants."""

    bearer: str | None = None
    #: bin id -> "manage", or "share:<share id>" for a read-only share link.
    cookie: Mapping[str, str] | None = None

    @property
    def presented(self) -> bool:
        """Whether the request carried anything at all."""
        return bool(self.bearer) or bool(self.cookie)


def is_operator(credentials: Credentials, operator_tokens: Iterable[str]) -> bool:
    """Whether the request carries an operator token."""
    return bool(credentials.bearer) and keys.is_operator(credentials.bearer or "", operator_tokens)


def grant_for(
    bin_: Mapping[str, Any] | None,
    credentials: Credentials,
    *,
    operator_tokens: Iterable[str],
    share_of: Callable[[str], Mapping[str, Any] | None],
    share_alive: Callable[[str, str], bool],
) -> Grant:
    """What ``credentials`` may do with ``bin_`` (None: the bin does not exist).

    ``share_of(key_digest)`` finds a live share link by its key's digest; ``share_alive(bin_id,
    share_id)`` says whether a share the cookie remembers is still live.
    """
    if is_operator(credentials, operator_tokens):
        return Grant.MANAGE
    if bin_ is None:
        return Grant.NONE
    bearer = credentials.bearer
    if bearer:
        if keys.token_matches(bearer, bin_.get("token_hash")):
            return Grant.MANAGE
        if bearer.startswith(keys.SHARE_PREFIX):
            share = share_of(keys.digest(bearer))
            if share is not None and share["bin_id"] == bin_["id"]:
                return Grant.READ
    held = (credentials.cookie or {}).get(bin_["id"])
    if held == "manage":
        return Grant.MANAGE
    if held and held.startswith("share:") and share_alive(bin_["id"], held[len("share:") :]):
        return Grant.READ
    return Grant.NONE
