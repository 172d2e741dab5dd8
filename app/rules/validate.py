"""Checking a bin's ``responses`` setting, as a person or a bins file wrote it.

The setting::

    {"default": ANSWER | None, "rules": [RULE, ...]}

    ANSWER = {"status": 200, "content_type": "...", "headers": [["Name", "value"], ...],
              "body": "..." | None, "delay": 0}
    RULE   = {"id": "...", "method": ["POST"], "path": "/stripe/*",
              "header": {"name": "...", "equals" | "contains": "..." | "present": bool},
              "json": {"field": "a.b.0", "equals": <scalar> | "present": bool},
              "answer": ANSWER, "fail_first": {"count": N, "status": S},
              "fail_random": {"probability": p, "status": S}}

Rules are tried in order and the first that matches answers (``app.rules.match``); no match
gives the default answer, and no default gives the standard acknowledgement
(``app.rules.plan``). Bodies and header values are templates (``app.rules.templates``).
"""

from __future__ import annotations

import json
import math
import re
import secrets
from typing import Any

from app.rules.limits import (
    DEFAULT_CONTENT_TYPE,
    FIELD_VALUE,
    MAX_CONFIG_CHARS,
    MAX_DELAY_SECONDS,
    MAX_FAIL_COUNT,
    MAX_HEADER_VALUE_CHARS,
    MAX_HEADERS,
    MAX_RULES,
    SURROGATE,
)
from app.rules.templates import check_template

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_CONTENT_TYPE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+/[!#$%&'*+\-.^_`|~0-9A-Za-z]+(;.*)?\Z")


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
    if SURROGATE.search(text):
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
        if not FIELD_VALUE.match(path) or " " in path:
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
        check_template(body, f"{where}.body")

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
        or not FIELD_VALUE.match(content_type)
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
        if len(value) > MAX_HEADER_VALUE_CHARS or not FIELD_VALUE.match(value):
            raise ValueError(
                f"{where}: the value of {name} must be at most {MAX_HEADER_VALUE_CHARS} characters "
                "without line breaks or control characters"
            )
        check_template(value, f"{where}.{name}")
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
