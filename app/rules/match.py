"""Which response rule a request matches, and the request as rules and templates see it.

A rule matches when every condition it has holds: method, path glob, header, JSON field. Rules
are tried in order and the first match answers (``choose``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qs

#: Largest body that rules and templates parse or decode. Parsing JSON costs many times the
#: body's size in memory and holds the worker while it runs; larger bodies are still stored, but
#: no JSON condition holds for them and templates see them as empty.
MAX_PARSED_BODY_BYTES = 1024 * 1024


class Incoming:
    """The parts of a captured request that rules look at and templates may read.

    Parsed views (query, form, JSON) are computed on first use only, so a bin whose rules look at
    the method and path never parses a body. A body over ``MAX_PARSED_BODY_BYTES`` is never
    parsed or decoded: its JSON is None, its text empty, its form ``{}``.
    """

    def __init__(
        self,
        *,
        method: str,
        path: str,
        query_string: str,
        headers: list[tuple[str, str]],
        body: bytes,
        content_type: str | None,
    ) -> None:
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers = headers
        self.body = body
        self.content_type = content_type or ""

    @functools.cached_property
    def header_map(self) -> _Headers:
        """Header name (any case) -> first value."""
        out = _Headers()
        for name, value in self.headers:
            out.setdefault(name.lower(), value)
        return out

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name`` (any case), in arrival order."""
        wanted = name.lower()
        return [v for n, v in self.headers if n.lower() == wanted]

    @property
    def parsable(self) -> bool:
        """True when the body is small enough to be parsed (``MAX_PARSED_BODY_BYTES``)."""
        return len(self.body) <= MAX_PARSED_BODY_BYTES

    @functools.cached_property
    def json(self) -> Any:
        """The body parsed as JSON, or None when it is not JSON (or too large to parse)."""
        if not self.body or not self.parsable:
            return None
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):
            return None

    @functools.cached_property
    def text(self) -> str:
        """The body as text (empty when too large to parse); invalid UTF-8 becomes U+FFFD."""
        if not self.parsable:
            return ""
        return self.body.decode("utf-8", errors="replace")

    @functools.cached_property
    def query(self) -> dict[str, str]:
        """Query parameters, first value of each."""
        return _first_values(self.query_string)

    @functools.cached_property
    def form(self) -> dict[str, str]:
        """An urlencoded form body, first value of each field ({} for other bodies)."""
        media = self.content_type.split(";", 1)[0].strip().lower()
        if media != "application/x-www-form-urlencoded":
            return {}
        return _first_values(self.text)


def _first_values(query: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}


class _Headers(dict):  # type: ignore[type-arg]
    """Header lookup by any spelling of the name (``headers["x-github-event"]``)."""

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(key.lower() if isinstance(key, str) else key)

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key.lower() if isinstance(key, str) else key)

    def get(self, key: Any, default: Any = None) -> Any:
        """The first value of header ``key`` (any case), or ``default``."""
        return super().get(key.lower() if isinstance(key, str) else key, default)


def choose(rules: list[dict[str, Any]], incoming: Incoming) -> dict[str, Any] | None:
    """The first rule that matches ``incoming``, or None."""
    for rule in rules:
        if _matches(rule, incoming):
            return rule
    return None


def _matches(rule: dict[str, Any], incoming: Incoming) -> bool:
    methods = rule.get("method")
    if methods is not None and incoming.method.upper() not in methods:
        return False
    pattern = rule.get("path")
    if pattern is not None and not path_matches(pattern, incoming.path):
        return False
    header = rule.get("header")
    if header is not None and not _header_matches(header, incoming):
        return False
    cond = rule.get("json")
    # Not even "present": false holds for a body too large to parse: it was not looked at.
    return cond is None or (incoming.parsable and _json_matches(cond, incoming.json))


def _header_matches(cond: dict[str, Any], incoming: Incoming) -> bool:
    values = incoming.header_values(cond["name"])
    if "present" in cond:
        return bool(values) == cond["present"]
    if "equals" in cond:
        return cond["equals"] in values
    return any(cond["contains"] in v for v in values)


_MISSING = object()


def json_field(document: Any, path: str) -> Any:
    """The value at dotted ``path`` (``data.items.0.id``) in a parsed JSON document, or _MISSING."""
    value = document
    for part in path.split("."):
        if isinstance(value, dict):
            if part not in value:
                return _MISSING
            value = value[part]
        elif (
            isinstance(value, list)
            and part.isascii()  # "²".isdigit() is true, but int("²") fails
            and part.isdigit()
            and int(part) < len(value)
        ):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _json_matches(cond: dict[str, Any], document: Any) -> bool:
    if document is None:
        return cond.get("present") is False
    value = json_field(document, cond["field"])
    if "present" in cond:
        return (value is not _MISSING) == cond["present"]
    return value is not _MISSING and _same_json(value, cond["equals"])


def _same_json(a: Any, b: Any) -> bool:
    # JSON's true is not 1: Python would say True == 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


@functools.lru_cache(maxsize=1024)
def _compile_glob(pattern: str) -> tuple[str, ...]:
    return tuple(pattern.split("/"))


def path_matches(pattern: str, path: str) -> bool:
    """Match a sub-path against a glob, segment by segment.

    ``*`` matches any characters within one segment, ``?`` exactly one, and a segment that is
    exactly ``**`` matches any number of segments, none included: ``/stripe/**`` matches
    ``/stripe``, ``/stripe/`` and ``/stripe/a/b``. Greedy matching with one backtrack point per
    level keeps this linear-ish whatever the pattern (a regular expression could be made to
    backtrack for minutes).
    """
    return _wildcard_match(_compile_glob(pattern), tuple(path.split("/")), "**", _match_segment)


def _match_segment(pattern: str, text: str) -> bool:
    return _wildcard_match(pattern, text, "*", lambda p, c: p == "?" or p == c)


def _wildcard_match(
    pattern: Sequence[Any], items: Sequence[Any], star: Any, one: Callable[[Any, Any], bool]
) -> bool:
    """Match ``items`` against ``pattern``, where ``star`` stands for any run of items (none
    included) and ``one(p, item)`` says whether pattern element ``p`` matches a single item.

    The classic greedy wildcard walk: it remembers only the last star and retries from there,
    so it never backtracks further (a regular expression could, for minutes).
    """
    p = i = 0
    last_star, mark = -1, 0
    while i < len(items):
        if p < len(pattern) and pattern[p] == star:
            last_star, mark = p, i
            p += 1
        elif p < len(pattern) and one(pattern[p], items[i]):
            p += 1
            i += 1
        elif last_star != -1:
            p = last_star + 1
            mark += 1
            i = mark
        else:
            return False
    while p < len(pattern) and pattern[p] == star:
        p += 1
    return p == len(pattern)
