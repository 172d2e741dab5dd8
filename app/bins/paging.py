"""Paging through a bin's requests: the page size and the cursor, as the API and the bin page
take them (query parameters, so always text)."""

from __future__ import annotations

import re

from app.core.invalid import Invalid
from app.storage.ids import seq_from_id

#: The largest page the API serves.
MAX_LIMIT = 500

_REQUEST_ID = re.compile(r"[0-9a-fA-F]{32}")
_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")


def page_limit(value: str | None, default: int) -> int:
    """The page size asked for (``default`` when absent): a whole number 1..MAX_LIMIT."""
    if value is None:
        return default
    # A pattern, not int() alone, which also takes "1_0", " 5" and digits of other scripts.
    if not _INTEGER.fullmatch(value):
        raise Invalid("limit", "limit must be a number")
    limit = int(value)
    if not 1 <= limit <= MAX_LIMIT:
        raise Invalid("limit", f"limit must be a number from 1 to {MAX_LIMIT}")
    return limit


def cursor(value: str | None, field: str = "before") -> int | None:
    """The sequence number of the request id given as a cursor; None when absent or empty."""
    if not value:
        return None
    # int(..., 16) alone would also take signs, underscores and surrounding spaces.
    seq = seq_from_id(value) if _REQUEST_ID.fullmatch(value) else None
    if seq is None:
        raise Invalid(field, f"{field} must be a request id")
    return seq
