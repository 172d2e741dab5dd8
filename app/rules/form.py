"""The "Responses" part of the bin settings form: form fields <-> a ``responses`` setting.

The page edits the default answer field by field (headers as "Name: value" lines) and the rules as
JSON. Parsing errors and validation errors (``app.rules.validate``) both come back as ValueError
with a message for the person who typed it; the view then shows the form again with what they
typed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from app.rules.limits import DEFAULT_CONTENT_TYPE
from app.rules.validate import validate_responses

#: Form field names, in the order the page shows them.
FIELDS = (
    "resp_status",
    "resp_content_type",
    "resp_delay",
    "resp_headers",
    "resp_body",
    "resp_rules",
)
#: Present (as a hidden input) when the form carries the Responses section.
MARKER = "responses_form"

RULES_PLACEHOLDER = """[
  {"id": "slack", "path": "/slack/**",
   "json": {"field": "type", "equals": "url_verification"},
   "answer": {"content_type": "application/json",
              "body": "{\\"challenge\\": {{ json.challenge|tojson }}}"}},
  {"id": "fail-twice", "method": "POST", "path": "/stripe/*",
   "fail_first": {"count": 2, "status": 503}}
]"""


def to_form(responses: dict[str, Any] | None) -> dict[str, str]:
    """The form fields showing a stored ``responses`` setting (empty strings when unset)."""
    out = dict.fromkeys(FIELDS, "")
    if not responses:
        return out
    default = responses.get("default")
    if default:
        out["resp_status"] = str(default["status"])
        if default["body"] is not None:
            out["resp_body"] = default["body"]
            if default["content_type"] != DEFAULT_CONTENT_TYPE:
                out["resp_content_type"] = default["content_type"] or ""
        out["resp_headers"] = "\n".join(f"{name}: {value}" for name, value in default["headers"])
        if default["delay"]:
            out["resp_delay"] = f"{default['delay']:g}"
    if responses.get("rules"):
        out["resp_rules"] = json.dumps(responses["rules"], indent=2, ensure_ascii=False)
    return out


def typed(form: Mapping[str, str]) -> dict[str, str]:
    """The Responses fields exactly as submitted, to show them again after an error."""
    return {name: form.get(name, "") for name in FIELDS}


def from_form(form: Mapping[str, str]) -> dict[str, Any] | None:
    """The validated ``responses`` setting the form describes; raises ValueError."""
    fields = {name: _lines(form.get(name, "")) for name in FIELDS}
    default: dict[str, Any] | None = None
    if any(fields[name].strip() for name in FIELDS if name != "resp_rules"):
        default = {}
        status = fields["resp_status"].strip()
        if status:
            try:
                default["status"] = int(status)
            except ValueError:
                raise ValueError("default answer: status must be a number like 200") from None
        if fields["resp_content_type"].strip():
            default["content_type"] = fields["resp_content_type"].strip()
        if fields["resp_body"]:
            default["body"] = fields["resp_body"]
        delay = fields["resp_delay"].strip()
        if delay:
            try:
                default["delay"] = float(delay)
            except ValueError:
                raise ValueError("default answer: delay must be a number of seconds") from None
        default["headers"] = _headers(fields["resp_headers"])
    rules: Any = []
    if fields["resp_rules"].strip():
        try:
            rules = json.loads(fields["resp_rules"])
        except ValueError as exc:
            raise ValueError(f"rules are not valid JSON: {exc}") from None
        except RecursionError:
            raise ValueError("rules are not valid JSON: nested too deeply") from None
        if not isinstance(rules, list):
            raise ValueError("rules must be a JSON list: [{...}, {...}]")
    return validate_responses({"default": default, "rules": rules})


def _lines(value: str) -> str:
    # Browsers send textarea line breaks as CRLF; what was typed was a plain line break.
    return value.replace("\r\n", "\n")


def _headers(text: str) -> list[list[str]]:
    out = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise ValueError(f'default answer headers, line {number}: expected "Name: value"')
        out.append([name.strip(), value.strip()])
    return out
