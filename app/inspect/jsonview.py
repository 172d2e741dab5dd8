"""JSON bodies, pretty-printed with every key as sent; nesting is checked before parsing."""

from __future__ import annotations

import json
import operator
import re
from itertools import accumulate, count
from typing import Any

from app.inspect.decode import SURROGATE_RE, charset_codec
from app.inspect.display import size_label

__all__ = ["MAX_JSON_DEPTH", "NotJson", "pretty_json"]

MAX_JSON_DEPTH = 200

# Indented JSON can be far bigger than its source (deep nesting times many small values), so the
# pretty text gets its own cap relative to the view cap.
_PRETTY_FACTOR = 4

# A JSON string, possibly unterminated: the optional closing quote keeps the scan linear (an
# unterminated string swallows the rest instead of being retried from every later quote).
_JSON_STRING_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.S)
_NON_BRACKET_RE = re.compile(r"[^\[\]{}]+")
_BRACKET_WEIGHTS = str.maketrans({"[": "\x02", "{": "\x02", "]": "\x00", "}": "\x00"})


def _json_too_deep(text: str, limit: int) -> bool:
    """Whether brackets nest deeper than ``limit``, found without recursion."""
    # Cheap bound first: without enough opening brackets the depth cannot exceed the limit.
    if text.count("[") + text.count("{") <= limit:
        return False
    # Strings go first so brackets inside them don't count; then only brackets are left.
    brackets = _NON_BRACKET_RE.sub("", _JSON_STRING_RE.sub("", text))
    # Openers become 2 and closers 0: after the i-th bracket the running sum is 2 * opened, so the
    # depth there is sum - i. All of it runs in C iterators, which matters for a megabyte of "[]".
    weights = brackets.translate(_BRACKET_WEIGHTS).encode("latin-1")
    return max(map(operator.sub, accumulate(weights), count(1)), default=0) > limit


class _PairsDict(dict):  # type: ignore[type-arg]
    """A JSON object with duplicate keys: ``items()`` yields every pair so all are printed.

    The json encoder walks objects via ``items()``, so this keeps what the sender sent instead of
    silently showing only the last value of a repeated key.
    """

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self._pairs = pairs

    def items(self) -> list[tuple[str, Any]]:  # type: ignore[override]
        return self._pairs


def _parse_json(text: str) -> tuple[Any, bool]:
    duplicates = False

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal duplicates
        obj = dict(pairs)
        if len(obj) != len(pairs):
            duplicates = True
            return _PairsDict(pairs)
        return obj

    return json.loads(text, object_pairs_hook=pairs_hook), duplicates


def _indent(value: Any, cap: int) -> tuple[str, bool]:
    """Indented JSON text, cut at ``cap`` characters; returns (text, truncated)."""
    chunks = []
    size = 0
    encoder = json.JSONEncoder(indent=2, ensure_ascii=False)
    for chunk in encoder.iterencode(value):
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            return _escape_surrogates("".join(chunks)[:cap]), True
    return _escape_surrogates("".join(chunks)), False


def _escape_surrogates(pretty: str) -> str:
    if not pretty.isascii():
        # Lone surrogates only occur inside JSON strings; write them back as the escapes they
        # came from so the text stays valid JSON and encodable.
        pretty = SURROGATE_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", pretty)
    return pretty


class NotJson(ValueError):
    """The body cannot be shown as JSON; ``reason`` is the note that says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def pretty_json(
    data: bytes, charset: str | None, *, final: bool, cap: int, notes: list[str]
) -> str:
    """``data`` as indented JSON text, with notes about duplicates and truncation added.

    Raises ``NotJson`` when the body is cut off, not valid in its charset, nested deeper than
    ``MAX_JSON_DEPTH`` or not JSON at all.
    """
    if not final:
        raise NotJson("JSON view truncated; shown as text")
    codec = charset_codec(charset) or "utf-8"
    try:
        # JSON is UTF-8; a BOM is tolerated rather than rejected as json.loads would.
        text = data.decode("utf-8-sig" if codec == "utf-8" else codec)
    except (UnicodeError, ValueError):
        raise NotJson(f"JSON is not valid {codec}; shown as text") from None
    if _json_too_deep(text, MAX_JSON_DEPTH):
        raise NotJson(f"JSON nesting deeper than {MAX_JSON_DEPTH} levels; shown as text")
    try:
        value, duplicates = _parse_json(text)
    except json.JSONDecodeError as exc:
        raise NotJson(
            f"invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); shown as text"
        ) from None
    except (ValueError, RecursionError) as exc:
        # ValueError: e.g. an integer longer than Python's int/str conversion limit.
        raise NotJson(f"invalid JSON ({str(exc)[:100]}); shown as text") from None
    pretty, truncated = _indent(value, max(cap, 1) * _PRETTY_FACTOR)
    if duplicates:
        notes.append("JSON has duplicate object keys; all are shown")
    if truncated:
        notes.append(f"pretty-printed JSON truncated at {size_label(len(pretty))}")
    return pretty
