"""A bin's settings as people and programs give them: one check per field, used by the bin page's
settings form and by the JSON API alike.

Every check returns the value to store or raises ``Invalid``, whose message names the field and
says what is expected. The form and the API differ only in how a value arrives (a checkbox is
"on" or absent, secrets are one per line, responses are split into fields); each value then goes
through the same check.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from app.config import MAX_REQUESTS_LIMIT, parse_duration
from app.core.invalid import Invalid
from app.limits import senders as senderlist
from app.rules import form as answerform
from app.rules.validate import validate_responses
from app.signing.verdicts import validate_signing

__all__ = [
    "SETTINGS",
    "Invalid",
    "changes_from_form",
    "changes_from_json",
    "check_auto_forward",
    "check_forward_url",
    "check_max_requests",
    "check_name",
    "check_responses",
    "check_retention",
    "check_senders",
    "check_senders_action",
    "check_signing",
    "check_target_url",
]

# Never part of a valid URL, and neither the database nor a page could store or show them.
_BAD_URL_CHARS = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def check_name(value: Any) -> str | None:
    """The name asked for a new bin (None: a random id); the naming rule is ``names``'s job."""
    if value is not None and not isinstance(value, str):
        raise Invalid("name", "name must be a string (or null for a random id)")
    return value


def check_target_url(value: Any, field: str = "url") -> str | None:
    """A URL to send requests to, trimmed; None when it is empty or blank.

    Where it may point is vetted on each delivery (``app.delivery.policy``), not here.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid(field, f"{field} must be a string or null")
    url = value.strip() or None
    if url is not None and _BAD_URL_CHARS.search(url):
        raise Invalid(field, f"{field} may not contain control characters or unpaired surrogates")
    return url


def check_forward_url(value: Any) -> str | None:
    """The bin's forward target (None clears it): an http:// or https:// URL with a host.

    Saved targets are checked for their shape here, where a typo is noticed at once rather than
    as failed forwards; where a URL may point is still vetted on each delivery.
    """
    url = check_target_url(value, "forward_url")
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # e.g. "http://[::1" (an unclosed IPv6 bracket)
        host = None
    if not host or parts.scheme not in ("http", "https"):
        raise Invalid("forward_url", "forward_url must be an http:// or https:// URL with a host")
    return url


def check_auto_forward(value: Any) -> bool:
    """The auto-forward switch."""
    if not isinstance(value, bool):
        raise Invalid("auto_forward", "auto_forward must be true or false")
    return value


def check_signing(value: Any) -> dict[str, Any] | None:
    """The signing setting ({provider, secrets}); None turns signature checks off."""
    try:
        return validate_signing(value)
    except ValueError as exc:
        raise Invalid("signing", str(exc)) from None


def check_responses(value: Any) -> dict[str, Any] | None:
    """The responses setting (default answer and rules); None restores the standard answer."""
    try:
        return validate_responses(value)
    except ValueError as exc:
        raise Invalid("responses", str(exc)) from None


#: Longest retention a bin may set: 999999999 days, in seconds.
MAX_RETENTION_SECONDS = 999_999_999 * 86400


def _whole(value: Any) -> int | None:
    """``value`` as an int when it is a JSON whole number (``5`` or ``5.0``), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) else None


def check_retention(value: Any) -> int | None:
    """A bin's own retention in seconds (0: forever): a duration string such as ``"30d"`` or a
    whole number of seconds; None follows the server's ``HOOKBIN_RETENTION``."""
    if value is None:
        return None
    seconds = _whole(value)
    if isinstance(value, str):
        try:
            seconds = parse_duration(value)
        except ValueError:
            seconds = None
    if seconds is None or not 0 <= seconds <= MAX_RETENTION_SECONDS:
        raise Invalid(
            "retention",
            "retention must be a duration like 90s, 15m, 12h or 30d (0: keep forever), "
            "whole seconds up to 999999999 days, or null for the server's setting",
        )
    return seconds


def check_max_requests(value: Any) -> int | None:
    """A bin's own cap (keep the newest N; 0: no cap); None follows the server's setting."""
    if value is None:
        return None
    count = _whole(value)
    if count is None or not 0 <= count <= MAX_REQUESTS_LIMIT:
        raise Invalid(
            "max_requests",
            f"max_requests must be a whole number 0..{MAX_REQUESTS_LIMIT} (0: no cap) "
            "or null for the server's setting",
        )
    return count


def check_senders(value: Any) -> list[str] | None:
    """The addresses and CIDR ranges that may send, canonical; None (or []) lets everyone."""
    try:
        return senderlist.parse_senders(value)
    except ValueError as exc:
        raise Invalid("senders", str(exc)) from None


def check_senders_action(value: Any) -> str:
    """What befalls a sender outside the list: ``refuse`` (the default, for None) or ``mark``."""
    try:
        return senderlist.parse_action(value)
    except ValueError as exc:
        raise Invalid("senders_action", str(exc)) from None


#: The settings a program may change, each with its check, in the order they are checked.
SETTINGS: dict[str, Callable[[Any], Any]] = {
    "forward_url": check_forward_url,
    "auto_forward": check_auto_forward,
    "signing": check_signing,
    "responses": check_responses,
    "retention": check_retention,
    "max_requests": check_max_requests,
    "senders": check_senders,
    "senders_action": check_senders_action,
}
#: Settings stored under another name than the one people give.
_STORED_AS = {"retention": "retention_seconds"}


def changes_from_json(
    data: Mapping[str, Any], bin_: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The checked changes of a ``PATCH /api/bins/{id}`` body: only the fields it has.

    Other keys are ignored, as the API document says. Secrets are never shown back, so a
    ``signing`` without ``secrets`` keeps the ones ``bin_`` has.
    """
    signing = data.get("signing")
    if isinstance(signing, dict) and "secrets" not in signing and bin_ and bin_.get("signing"):
        data = {**data, "signing": {**signing, "secrets": bin_["signing"].get("secrets", [])}}
    return {
        _STORED_AS.get(name, name): check(data[name])
        for name, check in SETTINGS.items()
        if name in data
    }


def changes_from_form(form: Mapping[str, str], bin_: Mapping[str, Any]) -> dict[str, Any]:
    """The checked changes the bin page's settings form asks for.

    The form always carries the forward target and the switch (an unticked checkbox is not
    sent); the signing, responses, limits and senders sections only when the page shows them (a
    blank retention or cap: the server's setting; senders one per line, blank lines ignored).
    Signing and
    responses count as changes only when they differ from what ``bin_`` has, because a change
    re-checks every stored signature or starts the rule counters over.
    """
    changes: dict[str, Any] = {
        "forward_url": check_forward_url(form.get("forward_url") or ""),
        "auto_forward": check_auto_forward(form.get("auto_forward") == "on"),
    }
    if "signing_provider" in form:
        secrets = (form.get("signing_secrets") or "").splitlines()
        if not any(s.strip() for s in secrets) and form.get("signing_clear") != "on":
            # Secrets are never shown back: an empty box keeps the ones saved.
            secrets = list((bin_.get("signing") or {}).get("secrets", []))
        signing = check_signing({"provider": form["signing_provider"], "secrets": secrets})
        if signing != (bin_.get("signing") or {"provider": "auto", "secrets": []}):
            changes["signing"] = signing
    if answerform.MARKER in form:
        try:
            responses = answerform.from_form(form)
        except ValueError as exc:
            raise Invalid("responses", str(exc)) from None
        if responses != bin_.get("responses"):
            changes["responses"] = responses
    if "retention" in form:  # blank: the server's setting
        changes["retention_seconds"] = check_retention(form["retention"].strip() or None)
    if "max_requests" in form:
        typed = form["max_requests"].strip()
        digits = typed.isascii() and typed.isdigit()
        changes["max_requests"] = check_max_requests(int(typed) if digits else typed or None)
    if "senders" in form:
        lines = [line.strip() for line in (form.get("senders") or "").splitlines()]
        changes["senders"] = check_senders([line for line in lines if line])
    if "senders_action" in form:
        changes["senders_action"] = check_senders_action(form.get("senders_action"))
    return changes
