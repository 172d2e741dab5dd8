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

from app.core.invalid import Invalid
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
    "check_name",
    "check_responses",
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


#: The settings a program may change, each with its check, in the order they are checked.
SETTINGS: dict[str, Callable[[Any], Any]] = {
    "forward_url": check_forward_url,
    "auto_forward": check_auto_forward,
    "signing": check_signing,
    "responses": check_responses,
}


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
    return {name: check(data[name]) for name, check in SETTINGS.items() if name in data}


def changes_from_form(form: Mapping[str, str], bin_: Mapping[str, Any]) -> dict[str, Any]:
    """The checked changes the bin page's settings form asks for.

    The form always carries the forward target and the switch (an unticked checkbox is not
    sent); the signing and responses sections only when the page shows them. Signing and
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
    return changes
