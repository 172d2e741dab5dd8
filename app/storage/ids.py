"""Public ids: random bin ids and request ids that carry their sortable sequence number."""

from __future__ import annotations

import secrets

_SEQ_HEX_DIGITS = 12


def new_bin_id() -> str:
    """A bin id: 128 random bits, URL-safe, 22 characters, never starting with ``-``.

    An id that starts with a dash reads as an option on a command line (``hookbin listen -rX..``
    fails with "No such option"), so such draws are simply drawn again.
    """
    while True:
        bin_id = secrets.token_urlsafe(16)
        if not bin_id.startswith("-"):
            return bin_id


def request_public_id(seq: int) -> str:
    """The public id of request ``seq``: sortable hex sequence plus 80 random bits."""
    return f"{seq:0{_SEQ_HEX_DIGITS}x}{secrets.token_hex(10)}"


def seq_from_id(request_id: str) -> int | None:
    """The sequence number inside a public request id, or None when it is not one of ours."""
    if len(request_id) != _SEQ_HEX_DIGITS + 20:
        return None
    try:
        int(request_id, 16)
    except ValueError:
        return None
    return int(request_id[:_SEQ_HEX_DIGITS], 16)
