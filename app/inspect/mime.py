"""Header lookups and media types, as the body view needs them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["FORM_TYPE", "header_values", "is_json_type", "is_text_type", "parse_params"]

# "; name=value" with value a quoted-string (unterminated tolerated) or a token-ish run.
_PARAM_RE = re.compile(r';\s*([^\s=;]+)\s*(?:=\s*("[^"\\]*(?:\\.[^"\\]*)*"?|[^;]*))?', re.S)

_QUOTED_PAIR_RE = re.compile(r'\\(["\\])')

_JSON_TYPES = frozenset({"application/json", "text/json", "application/x-json"})
FORM_TYPE = "application/x-www-form-urlencoded"

_TEXT_TYPES = frozenset(
    {
        "application/xml",
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-yaml",
        "application/yaml",
        "application/graphql",
        "application/sql",
        "application/toml",
        "application/csv",
        "application/x-sh",
        FORM_TYPE,
    }
)


def header_values(headers: Iterable[Any] | None, name: str) -> list[str]:
    """All values of header ``name`` (case-insensitive), in order; odd entries are skipped."""
    wanted = name.lower()
    out = []
    if isinstance(headers, Mapping):
        headers = headers.items()
    for item in headers or ():
        try:
            key, value = item
        except (TypeError, ValueError):
            continue
        if str(key).strip().lower() == wanted:
            out.append(str(value))
    return out


def parse_params(value: str) -> tuple[str, dict[str, str]]:
    """Split a header like Content-Type into its lower-cased first token and its parameters.

    Parameter names are lower-cased; the first occurrence of a name wins. Quoted values lose their
    quotes and ``\\"`` / ``\\\\`` escapes; other backslashes are kept literally because browsers
    send Windows paths (``C:\\dir\\x.png``) unescaped.
    """
    head, sep, _rest = value.partition(";")
    params: dict[str, str] = {}
    if sep:
        for m in _PARAM_RE.finditer(value, len(head)):
            key = m.group(1).lower()
            raw = (m.group(2) or "").strip()
            if raw.startswith('"'):
                raw = raw[1:-1] if len(raw) > 1 and raw.endswith('"') else raw[1:]
                raw = _QUOTED_PAIR_RE.sub(r"\1", raw)
            params.setdefault(key, raw)
    return head.strip().lower(), params


def is_json_type(mime: str) -> bool:
    """Whether a lower-cased media type is JSON (``application/json``, ``*/*+json`` ...)."""
    return mime in _JSON_TYPES or (mime.startswith("application/") and mime.endswith("+json"))


def is_text_type(mime: str) -> bool:
    """Whether a lower-cased media type is text to show as such (``text/*``, XML, scripts ...)."""
    if mime.startswith("text/") or mime in _TEXT_TYPES:
        return True
    subtype = mime.partition("/")[2]
    return subtype.endswith("+xml") or subtype == "xml" or "javascript" in subtype
