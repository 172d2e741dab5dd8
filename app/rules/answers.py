"""Response rules: what a bin's capture URL answers.

A bin may carry a ``responses`` setting::

    {"default": ANSWER | None, "rules": [RULE, ...]}

    ANSWER = {"status": 200, "content_type": "...", "headers": [["Name", "value"], ...],
              "body": "..." | None, "delay": 0}
    RULE   = {"id": "...", "method": ["POST"], "path": "/stripe/*",
              "header": {"name": "...", "equals" | "contains": "..." | "present": bool},
              "json": {"field": "a.b.0", "equals": <scalar> | "present": bool},
              "answer": ANSWER, "fail_first": {"count": N, "status": S},
              "fail_random": {"probability": p, "status": S}}

Rules are tried in order and the first that matches answers; no match gives the default answer,
and no default gives the standard acknowledgement. Bodies and header values are templates
rendered in a locked-down Jinja sandbox (see ``_AnswerEnvironment``).

Everything here is pure: counting "fail the first N" hits is a callback (the database does it,
see ``app.rulehits``), and the capture path turns a ``Planned`` answer into bytes.
"""

from __future__ import annotations

import contextvars
import functools
import json
import math
import random
import re
import secrets
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from jinja2 import StrictUndefined, TemplateError, Undefined, nodes
from jinja2.exceptions import SecurityError
from jinja2.filters import do_default, do_first, do_last, do_urlencode
from jinja2.sandbox import ImmutableSandboxedEnvironment

# --- limits ---------------------------------------------------------------------------------------

MAX_RULES = 50
MAX_HEADERS = 32
MAX_TEMPLATE_CHARS = 8 * 1024
#: Largest rendered body, and largest text any template operation may build on the way.
MAX_RENDERED_CHARS = 256 * 1024
#: Characters (or list items) all template operations may build in all while rendering one
#: template: values held side by side (``[x * n, x * n, ...]``) add up long before any is written.
MAX_BUILT_CHARS = 8 * MAX_RENDERED_CHARS
MAX_HEADER_VALUE_CHARS = 4096
MAX_DELAY_SECONDS = 30.0
MAX_FAIL_COUNT = 100_000
MAX_CONFIG_CHARS = 256 * 1024
_MAX_POW_BITS = 4096

DEFAULT_CONTENT_TYPE = "text/plain; charset=utf-8"

#: Names a template can read. Anything else is refused when the template is saved.
CONTEXT_NAMES = ("method", "path", "query", "headers", "json", "form", "body")

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_CONTENT_TYPE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+/[!#$%&'*+\-.^_`|~0-9A-Za-z]+(;.*)?\Z")
# Header values: visible ASCII, space, tab and Latin-1 high bytes; never CR, LF or NUL.
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*\Z")
_SURROGATE = re.compile("[\ud800-\udfff]")

#: Header names a configured answer may not carry, lower-case, with the reason shown to users.
FORBIDDEN_HEADERS: dict[str, str] = {
    # Framing is the server's business; a wrong value would break or smuggle responses.
    **dict.fromkeys(
        (
            "connection",
            "content-length",
            "http2-settings",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ),
        "is set by the server (framing and hop-by-hop headers)",
    ),
    # Hookbin sets these on every capture answer so that nothing a bin answers is active content.
    **dict.fromkeys(
        (
            "content-security-policy",
            "content-security-policy-report-only",
            "x-content-type-options",
            "cache-control",
            "access-control-allow-origin",
            "access-control-allow-credentials",
            "x-hookbin-request-id",
            "date",
            "server",
        ),
        "is set by Hookbin on every capture answer",
    ),
    "content-type": 'is set with "content_type"',
    # Capture URLs share their origin with the UI: nothing may act on that whole origin.
    **dict.fromkeys(
        (
            "set-cookie",
            "set-cookie2",
            "clear-site-data",
            "strict-transport-security",
            "alt-svc",
            "nel",
            "report-to",
            "reporting-endpoints",
            "service-worker-allowed",
            "origin-agent-cluster",
            "accept-ch",
            "critical-ch",
        ),
        "would act on the whole Hookbin origin",
    ),
    # Browser prompts and client-side navigation are phishing tools, not webhook answers.
    **dict.fromkeys(
        ("www-authenticate", "proxy-authenticate", "refresh"),
        "would make a browser prompt or navigate",
    ),
}

#: HTTP forbids a body in these answers (RFC 9110 15.3.5, 15.3.6, 15.4.5).
NO_BODY_STATUSES = frozenset({204, 205, 304})


class AnswerError(Exception):
    """A template could not be rendered for this request (answered 500, the capture is kept)."""


# --- validation -----------------------------------------------------------------------------------


def validate_responses(data: Any) -> dict[str, Any] | None:
    """Check a ``responses`` setting from a user and return its stored form.

    Raises ValueError with a message that names the offending field, e.g.
    ``rules[2].answer.status must be an integer 200..599``. Rules without an ``id`` get a fresh
    one, so that counters survive reordering. An empty setting is stored as None (the standard
    acknowledgement).
    """
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ValueError('responses must be an object like {"default": {...}, "rules": [...]}')
    _no_unknown_keys(data, {"default", "rules"}, "responses")
    default = data.get("default")
    out_default = None if default is None else _validate_answer(default, "default")
    rules = data.get("rules", [])
    if rules is None:
        rules = []
    if not isinstance(rules, list):
        raise ValueError("rules must be a list")
    if len(rules) > MAX_RULES:
        raise ValueError(f"rules: at most {MAX_RULES} rules")
    out_rules = [_validate_rule(rule, f"rules[{i}]") for i, rule in enumerate(rules)]
    ids = [r["id"] for r in out_rules]
    for i, rule_id in enumerate(ids):
        if rule_id in ids[:i]:
            raise ValueError(f'rules[{i}].id "{rule_id}" is used by another rule')
    if out_default is None and not out_rules:
        return None
    out = {"default": out_default, "rules": out_rules}
    text = json.dumps(out, ensure_ascii=False)
    if len(text) > MAX_CONFIG_CHARS:
        raise ValueError(f"responses: at most {MAX_CONFIG_CHARS // 1024} KiB in all")
    if _SURROGATE.search(text):
        # Not UTF-8: an answer or the bin's page could never be written out.
        raise ValueError("responses: text may not contain unpaired surrogates (\\ud800-\\udfff)")
    return out


def new_rule_id() -> str:
    """A fresh rule id: short, readable, unique enough within one bin."""
    return "r-" + secrets.token_hex(4)


def _no_unknown_keys(obj: dict[str, Any], known: set[str], where: str) -> None:
    for key in obj:
        if key not in known:
            allowed = ", ".join(sorted(known))
            raise ValueError(f'{where}: unknown field "{key}" (allowed: {allowed})')


def _validate_rule(rule: Any, where: str) -> dict[str, Any]:
    if not isinstance(rule, dict):
        raise ValueError(f"{where} must be an object")
    _no_unknown_keys(
        rule,
        {"id", "method", "path", "header", "json", "answer", "fail_first", "fail_random"},
        where,
    )
    rule_id = rule.get("id")
    if rule_id is None or rule_id == "":
        rule_id = new_rule_id()
    if not isinstance(rule_id, str) or not _RULE_ID.match(rule_id):
        raise ValueError(
            f"{where}.id must be 1..64 letters, digits, '.', '_' or '-' (starting with a letter "
            "or digit)"
        )
    out: dict[str, Any] = {"id": rule_id}

    method = rule.get("method")
    if method is not None and method != "*":
        methods = [method] if isinstance(method, str) else method
        if (
            not isinstance(methods, list)
            or not methods
            or not all(isinstance(m, str) and _TOKEN.match(m) and len(m) <= 64 for m in methods)
        ):
            raise ValueError(f'{where}.method must be a method like "POST", a list of them, or "*"')
        out["method"] = sorted({m.upper() for m in methods})

    path = rule.get("path")
    if path is not None and path != "":
        if not isinstance(path, str) or not path.startswith("/") or len(path) > 512:
            raise ValueError(f'{where}.path must be a pattern starting with "/" like "/stripe/*"')
        if not _FIELD_VALUE.match(path) or " " in path:
            raise ValueError(f"{where}.path may not contain spaces or control characters")
        out["path"] = path

    if rule.get("header") is not None:
        out["header"] = _validate_header_condition(rule["header"], f"{where}.header")
    if rule.get("json") is not None:
        out["json"] = _validate_json_condition(rule["json"], f"{where}.json")
    if rule.get("answer") is not None:
        out["answer"] = _validate_answer(rule["answer"], f"{where}.answer")
    if rule.get("fail_first") is not None:
        fail = rule["fail_first"]
        if not isinstance(fail, dict):
            raise ValueError(
                f'{where}.fail_first must be an object like {{"count": 2, "status": 503}}'
            )
        _no_unknown_keys(fail, {"count", "status"}, f"{where}.fail_first")
        count = fail.get("count")
        if not _is_int(count) or not 1 <= count <= MAX_FAIL_COUNT:
            raise ValueError(f"{where}.fail_first.count must be an integer 1..{MAX_FAIL_COUNT}")
        out["fail_first"] = {
            "count": count,
            "status": _failure_status(fail.get("status", 503), f"{where}.fail_first.status"),
        }
    if rule.get("fail_random") is not None:
        fail = rule["fail_random"]
        if not isinstance(fail, dict):
            raise ValueError(
                f'{where}.fail_random must be an object like {{"probability": 0.5, "status": 500}}'
            )
        _no_unknown_keys(fail, {"probability", "status"}, f"{where}.fail_random")
        p = fail.get("probability")
        if not _is_number(p) or not 0 <= p <= 1:
            raise ValueError(f"{where}.fail_random.probability must be a number 0..1")
        out["fail_random"] = {
            "probability": p,
            "status": _failure_status(fail.get("status", 500), f"{where}.fail_random.status"),
        }
    return out


def _validate_header_condition(cond: Any, where: str) -> dict[str, Any]:
    if not isinstance(cond, dict):
        raise ValueError(f'{where} must be an object like {{"name": "X-Event", "equals": "push"}}')
    _no_unknown_keys(cond, {"name", "equals", "contains", "present"}, where)
    name = cond.get("name")
    if not isinstance(name, str) or not _TOKEN.match(name) or len(name) > 256:
        raise ValueError(f"{where}.name must be a header name")
    ops = [op for op in ("equals", "contains", "present") if op in cond]
    if len(ops) != 1:
        raise ValueError(f'{where} needs exactly one of "equals", "contains" or "present"')
    op = ops[0]
    value = cond[op]
    if op == "present":
        if not isinstance(value, bool):
            raise ValueError(f"{where}.present must be true or false")
    elif not isinstance(value, str) or len(value) > 1024:
        raise ValueError(f"{where}.{op} must be a string of at most 1024 characters")
    return {"name": name, op: value}


def _validate_json_condition(cond: Any, where: str) -> dict[str, Any]:
    if not isinstance(cond, dict):
        raise ValueError(
            f'{where} must be an object like {{"field": "type", "equals": "url_verification"}}'
        )
    _no_unknown_keys(cond, {"field", "equals", "present"}, where)
    path = cond.get("field")
    if not isinstance(path, str) or not path or len(path) > 256 or "" in path.split("."):
        raise ValueError(f'{where}.field must be a dotted field path like "event.type"')
    ops = [op for op in ("equals", "present") if op in cond]
    if len(ops) != 1:
        raise ValueError(f'{where} needs exactly one of "equals" or "present"')
    op = ops[0]
    value = cond[op]
    if op == "present":
        if not isinstance(value, bool):
            raise ValueError(f"{where}.present must be true or false")
    elif (
        not (value is None or isinstance(value, str | bool | int | float))
        or (isinstance(value, str) and len(value) > 1024)
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        raise ValueError(f"{where}.equals must be a string, number, true, false or null")
    return {"field": path, op: value}


def _validate_answer(answer: Any, where: str) -> dict[str, Any]:
    if not isinstance(answer, dict):
        raise ValueError(f'{where} must be an object like {{"status": 200, "body": "ok"}}')
    _no_unknown_keys(answer, {"status", "content_type", "headers", "body", "delay"}, where)
    status = answer.get("status", 200)
    if not _is_int(status) or not 200 <= status <= 599:
        raise ValueError(f"{where}.status must be an integer 200..599")

    body = answer.get("body")
    if body is not None:
        if not isinstance(body, str):
            raise ValueError(f"{where}.body must be a string (or null for the standard answer)")
        _check_template(body, f"{where}.body")

    content_type = answer.get("content_type")
    if content_type in (None, ""):
        content_type = None if body is None else DEFAULT_CONTENT_TYPE
    elif body is None:
        raise ValueError(
            f"{where}.content_type needs a body (leave both out for the standard answer)"
        )
    elif (
        not isinstance(content_type, str)
        or len(content_type) > 256
        or not _CONTENT_TYPE.match(content_type)
        or not _FIELD_VALUE.match(content_type)
    ):
        raise ValueError(f'{where}.content_type must be a media type like "application/json"')

    headers = _validate_headers(answer.get("headers"), f"{where}.headers")

    delay = answer.get("delay", 0)
    if not _is_number(delay) or not 0 <= delay <= MAX_DELAY_SECONDS:
        raise ValueError(f"{where}.delay must be a number of seconds 0..{MAX_DELAY_SECONDS:g}")
    return {
        "status": status,
        "content_type": content_type,
        "headers": headers,
        "body": body,
        "delay": delay,
    }


def _validate_headers(headers: Any, where: str) -> list[list[str]]:
    if headers is None:
        return []
    if isinstance(headers, dict):
        pairs = list(headers.items())
    elif isinstance(headers, list) and all(
        isinstance(h, list | tuple) and len(h) == 2 for h in headers
    ):
        pairs = [(h[0], h[1]) for h in headers]
    else:
        raise ValueError(
            f'{where} must be an object {{"Name": "value"}} or a list of [name, value]'
        )
    if len(pairs) > MAX_HEADERS:
        raise ValueError(f"{where}: at most {MAX_HEADERS} headers")
    out = []
    for name, value in pairs:
        if not isinstance(name, str) or not _TOKEN.match(name) or len(name) > 256:
            raise ValueError(f"{where}: {name!r} is not a valid header name")
        if name.lower() in FORBIDDEN_HEADERS:
            raise ValueError(f"{where}: {name} {FORBIDDEN_HEADERS[name.lower()]}")
        if not isinstance(value, str):
            raise ValueError(f"{where}: the value of {name} must be a string")
        if len(value) > MAX_HEADER_VALUE_CHARS or not _FIELD_VALUE.match(value):
            raise ValueError(
                f"{where}: the value of {name} must be at most {MAX_HEADER_VALUE_CHARS} characters "
                "without line breaks or control characters"
            )
        _check_template(value, f"{where}.{name}")
        out.append([name, value])
    return out


def _failure_status(status: Any, where: str) -> int:
    if not _is_int(status) or not 400 <= status <= 599:
        raise ValueError(f"{where} must be an integer 400..599")
    return status


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# --- matching -------------------------------------------------------------------------------------


class Incoming:
    """The parts of a captured request that rules look at and templates may read.

    Parsed views (query, form, JSON) are computed on first use only, so a bin whose rules look at
    the method and path never parses a body.
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

    @functools.cached_property
    def json(self) -> Any:
        """The body parsed as JSON, or None when it is not JSON."""
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):
            return None

    @functools.cached_property
    def text(self) -> str:
        """The body as text; invalid UTF-8 becomes U+FFFD."""
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
    return cond is None or _json_matches(cond, incoming.json)


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


# --- planning an answer ---------------------------------------------------------------------------


@dataclass(slots=True)
class Planned:
    """What the capture URL answers one request with.

    Either ``body`` (a configured answer, rendered) or ``payload`` (a small JSON object that the
    capture path completes with the stored request's id: the standard acknowledgement, a
    simulated failure, or a template error) is set.
    """

    status: int
    rule: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None
    content_type: str | None = None
    payload: dict[str, Any] | None = None
    delay: float = 0.0


ACKNOWLEDGEMENT: dict[str, Any] = {"ok": True}


def plan(
    responses: dict[str, Any],
    incoming: Incoming,
    *,
    count: Callable[[str], int],
    rng: Callable[[], float] = random.random,
) -> Planned:
    """Decide the answer to ``incoming`` under a bin's (validated) ``responses`` setting.

    ``count(rule_id)`` adds one to the rule's hit counter and returns the new value; it is only
    called for rules with ``fail_first``. Template errors do not raise: they plan a 500 naming the
    problem, so that the capture is still stored.
    """
    rule = choose(responses.get("rules") or [], incoming)
    rule_id = None if rule is None else rule["id"]
    if rule is not None:
        failing = rule.get("fail_first")
        if failing is not None:
            hits = count(rule_id)  # type: ignore[arg-type]
            if hits <= failing["count"]:
                return _failure(failing["status"], rule_id, f"failure {hits} of {failing['count']}")
        chance = rule.get("fail_random")
        if chance is not None and rng() < chance["probability"]:
            return _failure(chance["status"], rule_id, f"probability {chance['probability']:g}")
    answer = (rule or {}).get("answer") or responses.get("default")
    if answer is None:
        return Planned(status=200, rule=rule_id, payload=dict(ACKNOWLEDGEMENT))
    where = "default answer" if rule is None or "answer" not in rule else f"rule {rule_id}"
    try:
        return render_answer(answer, incoming, rule=rule_id, where=where)
    except AnswerError as exc:
        return Planned(status=500, rule=rule_id, payload={"error": str(exc)})


def _failure(status: int, rule_id: str | None, why: str) -> Planned:
    return Planned(
        status=status,
        rule=rule_id,
        payload={"error": f"simulated failure by response rule {rule_id} ({why})"},
    )


def render_answer(
    answer: dict[str, Any], incoming: Incoming, *, rule: str | None = None, where: str = "answer"
) -> Planned:
    """Render a validated answer for ``incoming``; raises AnswerError naming what failed."""
    status = answer["status"]
    headers = []
    for name, source in answer["headers"]:
        value = render_template(source, incoming, where=f"{where}, header {name}")
        if len(value) > MAX_HEADER_VALUE_CHARS or not _FIELD_VALUE.match(value):
            raise AnswerError(
                f"response template failed ({where}, header {name}): the value must be at most "
                f"{MAX_HEADER_VALUE_CHARS} characters without line breaks or control characters"
            )
        headers.append((name, value))
    delay = float(answer["delay"])
    if status in NO_BODY_STATUSES:
        return Planned(status=status, rule=rule, headers=headers, body=b"", delay=delay)
    if answer["body"] is None:
        return Planned(
            status=status, rule=rule, headers=headers, payload=dict(ACKNOWLEDGEMENT), delay=delay
        )
    body = _utf8(render_template(answer["body"], incoming, where=f"{where}, body"))
    content_type = answer["content_type"]
    return Planned(
        status=status,
        rule=rule,
        headers=headers,
        body=body,
        content_type=content_type,
        delay=delay,
    )


def _utf8(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A JSON body may carry lone surrogates ("\ud800"), which UTF-8 cannot: write U+FFFD.
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()


# --- templates ------------------------------------------------------------------------------------


class _TooLarge(SecurityError):
    pass


#: Methods a template may call on strings and objects; none of them can build large values.
_SAFE_METHODS = frozenset(
    {"get", "lower", "upper", "strip", "lstrip", "rstrip", "startswith", "endswith"}
)


def _limit(text: str) -> str:
    if len(text) > MAX_RENDERED_CHARS:
        raise _TooLarge(f"a value longer than {MAX_RENDERED_CHARS} characters")
    return text


def _as_text(value: Any) -> str:
    """How a value is written out: text as is, numbers as numbers, everything else as JSON."""
    if isinstance(value, str):
        return _limit(value)
    if isinstance(value, bool) or value is None or isinstance(value, dict | list | tuple):
        return _to_json(value, html_safe=False)
    if isinstance(value, int | float):
        return _limit(str(value))
    if isinstance(value, Undefined):
        str(value)  # raises the undefined value's own message ("... has no attribute ...")
    # Nothing else is reachable from the context; refuse rather than show a Python repr.
    raise SecurityError(f"cannot write out a {type(value).__name__} value")


def _to_json(value: Any, *, html_safe: bool = True) -> str:
    if isinstance(value, Undefined):
        str(value)  # raises the undefined value's own message
    # Streamed with a running total, so a huge structure is refused before it is built.
    encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False)
    parts = []
    size = 0
    try:
        for chunk in encoder.iterencode(value):
            size += len(chunk)
            if size > MAX_RENDERED_CHARS:
                raise _TooLarge(f"a value longer than {MAX_RENDERED_CHARS} characters")
            parts.append(chunk)
    except (TypeError, ValueError) as exc:
        raise SecurityError(f"cannot write this value as JSON: {exc}") from None
    text = "".join(parts)
    if html_safe:
        # Valid JSON that stays inert even if someone pastes it into HTML.
        text = (
            text.replace("<", "\\u003c")
            .replace(">", "\\u003e")
            .replace("&", "\\u0026")
            .replace("'", "\\u0027")
        )
    return text


def _filter_tojson(value: Any) -> str:
    return _to_json(value)


def _filter_lower(value: Any) -> str:
    return _as_text(value).lower()


def _filter_upper(value: Any) -> str:
    return _as_text(value).upper()


def _filter_trim(value: Any, chars: str | None = None) -> str:
    return _as_text(value).strip(chars)


def _filter_replace(value: Any, old: Any, new: Any, count: int | None = None) -> str:
    text, old, new = _as_text(value), _as_text(old), _as_text(new)
    times = text.count(old) if old else len(text) + 1
    if count is not None:
        times = min(times, max(int(count), 0))
    _limit_size(len(text) + times * (len(new) - len(old)))
    return text.replace(old, new, -1 if count is None else max(int(count), 0))


def _filter_join(value: Any, separator: Any = "") -> str:
    separator = _as_text(separator)
    parts: list[str] = []
    size = 0
    for item in value if isinstance(value, list | tuple | dict) else _as_text(value):
        text = _as_text(item)
        size += len(text) + (len(separator) if parts else 0)
        _limit_size(size)
        parts.append(text)
    return separator.join(parts)


def _filter_urlencode(value: Any) -> str:
    if isinstance(value, dict | list | tuple):
        _to_json(value)  # only to refuse a huge structure before encoding it
        return str(do_urlencode(value))
    return str(do_urlencode(_as_text(value)))


def _filter_length(value: Any) -> int:
    return len(value)


def _filter_int(value: Any, default: int = 0) -> int:
    try:
        if isinstance(value, str):
            return int(float(value)) if "." in value else int(value)
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return default


def _filter_float(value: Any, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        # Jinja's own tests would compute value % n: on text, that is printf-style formatting
        # ("%999999999s" builds a gigabyte), and the sender writes that text.
        raise SecurityError(f"expected a number, not a {type(value).__name__} value")
    return value


def _test_odd(value: Any) -> bool:
    return _number(value) % 2 == 1


def _test_even(value: Any) -> bool:
    return _number(value) % 2 == 0


def _test_divisibleby(value: Any, num: Any) -> bool:
    return _number(value) % _number(num) == 0


def _limit_size(size: int) -> None:
    if size > MAX_RENDERED_CHARS:
        raise _TooLarge(f"a value longer than {MAX_RENDERED_CHARS} characters")


#: What the template being rendered has built so far (``_spend``); None outside a rendering.
_BUILT: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "hookbin_answer_built", default=None
)


def _spend(size: int) -> None:
    """Count ``size`` more characters (or items) built by the template being rendered."""
    built = _BUILT.get()
    if built is not None:
        built[0] += size
        if built[0] > MAX_BUILT_CHARS:
            raise _TooLarge(f"more than {MAX_BUILT_CHARS} characters built in all")


def _spending(make: Callable[..., str]) -> Callable[..., str]:
    """A filter whose result is counted by ``_spend``."""

    @functools.wraps(make)
    def made(*args: Any, **kwargs: Any) -> str:
        text = make(*args, **kwargs)
        _spend(len(text))
        return text

    return made


#: Not a name: the filter that ``_compiled`` puts where a template slices (``x[a:b]``).
_SLICE = "hookbin slice"

_FILTERS: dict[str, Callable[..., Any]] = {
    "default": do_default,
    "d": do_default,
    "first": do_first,
    "last": do_last,
    "float": _filter_float,
    "int": _filter_int,
    "join": _spending(_filter_join),
    "length": _filter_length,
    "count": _filter_length,
    "lower": _spending(_filter_lower),
    "upper": _spending(_filter_upper),
    "trim": _spending(_filter_trim),
    "replace": _spending(_filter_replace),
    "string": _spending(_as_text),
    "tojson": _spending(_filter_tojson),
    "urlencode": _spending(_filter_urlencode),
}


class _AnswerEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, narrowed further for templates written by strangers.

    On top of the sandbox: no globals at all, a short list of filters that cannot build huge
    values, only a few harmless methods, dictionary keys before attributes (``json.items`` is the
    field, not the method), every value written out through a size check, and the ``*``, ``**``,
    ``+`` and ``%`` operators checked before they run. Statements other than ``if`` are refused
    before a template is ever compiled (``_check_template``).
    """

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self) -> None:
        super().__init__(
            autoescape=False,
            undefined=StrictUndefined,
            finalize=_as_text,
            cache_size=0,
            auto_reload=False,
        )
        self.globals.clear()
        self.filters = {**_FILTERS, _SLICE: slice}  # _SLICE: see _compiled; no template can name it
        self.tests = {
            **self.tests,
            "odd": _test_odd,
            "even": _test_even,
            "divisibleby": _test_divisibleby,
        }

    def getattr(self, obj: Any, attribute: str) -> Any:
        """``obj.attribute``: a dictionary key first, else one of a few harmless methods."""
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        if attribute in _SAFE_METHODS and isinstance(obj, str | dict):
            return getattr(obj, attribute)
        if attribute.startswith("_") or hasattr(obj, attribute):
            return self.unsafe_undefined(obj, attribute)
        return self.undefined(obj=obj, name=attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        """``obj[argument]``: keys of dictionaries, indexes and slices of lists and text only."""
        if isinstance(obj, dict):
            if isinstance(argument, str) and argument in obj:
                return obj[argument]
            return self.undefined(obj=obj, name=argument)
        if isinstance(obj, list | tuple | str) and isinstance(argument, int | slice):
            try:
                item = obj[argument]
            except (IndexError, TypeError, ValueError):
                return self.undefined(obj=obj, name=argument)
            if isinstance(argument, slice):
                _spend(len(item))  # a slice is a copy
            return item
        if isinstance(argument, str) and (argument.startswith("_") or hasattr(obj, argument)):
            return self.unsafe_undefined(obj, argument)
        return self.undefined(obj=obj, name=argument)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        """Only the methods ``getattr`` hands out may be called."""
        if isinstance(__obj, Undefined):
            return __obj()  # raises with the reason the attribute was refused
        if not (
            isinstance(__obj, types.BuiltinMethodType | types.MethodType)
            and __obj.__name__ in _SAFE_METHODS
            and isinstance(__obj.__self__, str | dict)
        ):
            raise SecurityError(f"{type(__obj).__name__} values cannot be called")
        result = __obj(*args, **kwargs)
        if isinstance(result, str) and __obj.__name__ != "get":
            _spend(len(result))  # lower(), strip()...: a copy
        return result

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """Refuse operations whose result would be huge before computing them."""
        if operator == "%":
            if isinstance(left, str):
                raise SecurityError("string formatting with % is not allowed")
        elif operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    _limit_size(len(seq) * max(times, 0))
                    _spend(len(seq) * max(times, 0))
        elif operator == "+":
            if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
                _limit_size(len(left) + len(right))
                _spend(len(left) + len(right))
        elif (
            operator == "**"
            and isinstance(left, int)
            and isinstance(right, int)
            and abs(left) > 1
            and right > 0
            and right * abs(left).bit_length() > _MAX_POW_BITS
        ):
            raise _TooLarge("a number too large")
        return super().call_binop(context, operator, left, right)


_ENV = _AnswerEnvironment()

#: Statement nodes a template may contain; expressions are checked separately.
_STATEMENTS = (nodes.Template, nodes.Output, nodes.If)
_REFUSED_EXPRESSIONS: dict[type[nodes.Node], str] = {
    nodes.Concat: 'the "~" operator is not supported (write {{ a }}{{ b }})',
    nodes.NSRef: "namespaces are not supported",
}
_STATEMENT_NAMES: dict[type[nodes.Node], str] = {
    nodes.For: "loops",
    nodes.Macro: "macros",
    nodes.CallBlock: "call blocks",
    nodes.Assign: "set",
    nodes.AssignBlock: "set",
    nodes.With: "with",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "import",
    nodes.Extends: "extends",
    nodes.Block: "blocks",
    nodes.FilterBlock: "filter blocks",
}


def _is_template(source: str) -> bool:
    return "{{" in source or "{%" in source or "{#" in source


def _check_template(source: str, where: str) -> None:
    """Refuse, with ``where`` in the message, a template that is too long, does not parse, or uses
    anything beyond output, ``if``, the context names, and the allowed filters and methods."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise ValueError(f"{where}: at most {MAX_TEMPLATE_CHARS} characters")
    if _SURROGATE.search(source):
        raise ValueError(f"{where}: may not contain unpaired surrogates (\\ud800-\\udfff)")
    if not _is_template(source):
        return
    try:
        tree = _ENV.parse(source)
        # Statements first, then names: "range(3)" is better explained by "range" than the call.
        for node in sorted(_walk(tree), key=_report_order):
            problem = _node_problem(node)
            if problem:
                raise ValueError(f"{where}: {problem}")
        _compiled(source)
    except TemplateError as exc:
        raise ValueError(f"{where}: template error: {exc}") from None
    except (RecursionError, SyntaxError):
        # Jinja's parser recurses per nesting level, and Python refuses deeply nested code.
        raise ValueError(f"{where}: template error: expressions are nested too deeply") from None


def _report_order(node: nodes.Node) -> int:
    return 0 if isinstance(node, nodes.Stmt) else 1 if isinstance(node, nodes.Name) else 2


def _walk(node: nodes.Node) -> Iterator[nodes.Node]:
    yield node
    for child in node.iter_child_nodes():
        yield from _walk(child)


def _node_problem(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Stmt) and not isinstance(node, _STATEMENTS):
        what = _STATEMENT_NAMES.get(type(node), f"{type(node).__name__} statements")
        return f"{what} are not allowed in answer templates (only {{{{ ... }}}} and {{% if %}})"
    for kind, message in _REFUSED_EXPRESSIONS.items():
        if isinstance(node, kind):
            return message
    if isinstance(node, nodes.Name) and node.name not in CONTEXT_NAMES:
        return f'unknown name "{node.name}" (templates can read {", ".join(CONTEXT_NAMES)})'
    if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
        return f'"{node.attr}" cannot be read'
    if (
        isinstance(node, nodes.Getitem)
        and isinstance(node.arg, nodes.Const)
        and isinstance(node.arg.value, str)
        and node.arg.value.startswith("_")
    ):
        # No value a template can read has keys like this: it can only be a probe.
        return f'"{node.arg.value}" cannot be read'
    if isinstance(node, nodes.Filter) and node.name not in _FILTERS:
        return f'unknown filter "{node.name}" (allowed: {", ".join(sorted(_FILTERS))})'
    if isinstance(node, nodes.Call) and not (
        isinstance(node.node, nodes.Getattr) and node.node.attr in _SAFE_METHODS
    ):
        return f"only these methods can be called: {', '.join(sorted(_SAFE_METHODS))}"
    return None


@functools.lru_cache(maxsize=512)
def _compiled(source: str) -> tuple[Any, frozenset[str]]:
    """The compiled template and the context names it reads (cached: rules are few)."""
    tree = _ENV.parse(source)
    names = frozenset(
        n.name for n in _walk(tree) if isinstance(n, nodes.Name) and n.name in CONTEXT_NAMES
    )
    for node in tree.find_all(nodes.Getitem):
        if isinstance(node.arg, nodes.Slice):
            # Jinja compiles ``x[a:b]`` to a plain Python subscript; as ``x[_SLICE(a, b)]`` it goes
            # through ``_AnswerEnvironment.getitem``, which counts the copy a slice makes.
            bounds = [node.arg.start, node.arg.stop, node.arg.step]
            start, stop, step = (nodes.Const(None) if b is None else b for b in bounds)
            node.arg = nodes.Filter(start, _SLICE, [stop, step], [], None, None)
    return _ENV.from_string(tree), names


def _context(incoming: Incoming, names: frozenset[str]) -> dict[str, Any]:
    # Built lazily per name: a template that reads ``json.challenge`` never decodes a form.
    makers: Mapping[str, Callable[[], Any]] = {
        "method": lambda: incoming.method,
        "path": lambda: incoming.path,
        "query": lambda: incoming.query,
        "headers": lambda: incoming.header_map,
        "json": lambda: incoming.json,
        "form": lambda: incoming.form,
        "body": lambda: incoming.text,
    }
    return {name: makers[name]() for name in names}


def render_template(source: str, incoming: Incoming, *, where: str = "template") -> str:
    """Render one answer template against a request; raises AnswerError naming the problem.

    Output is streamed and counted, so a template cannot write more than MAX_RENDERED_CHARS,
    and what its operations build on the way is counted too (``_spend``).
    """
    if not _is_template(source):
        return source
    built = _BUILT.set([0])
    try:
        template, names = _compiled(source)
        size = 0
        parts = []
        for chunk in template.generate(_context(incoming, names)):
            size += len(chunk)
            _limit_size(size)
            parts.append(chunk)
        return "".join(parts)
    except _TooLarge as exc:
        raise AnswerError(f"response template failed ({where}): {exc}") from None
    except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as exc:
        raise AnswerError(f"response template failed ({where}): {exc}") from None
    except RecursionError:
        raise AnswerError(f"response template failed ({where}): too deeply nested") from None
    finally:
        _BUILT.reset(built)
