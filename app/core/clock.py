"""Time as Hookbin stores and shows it: timezone-aware UTC, ISO 8601 with milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive value (SQLite hands them back so) is taken to be UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso(value: datetime) -> str:
    """ISO 8601 with a ``Z`` suffix and millisecond precision."""
    return as_utc(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")
