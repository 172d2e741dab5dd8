"""Signature verdicts of captured requests, under their bin's signing settings.

A verdict is computed on the stored bytes with the time the request arrived as "now" (a request
that was fresh when it came stays fresh), and is stored with the bin's ``signing_rev``. When the
bin's provider or secrets change, the revision moves on and each request is checked again the
next time it is read (``refresh``), so what a person sees always matches the current secrets.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from app.signing.common import PROVIDERS
from app.signing.verify import verify

Verdict = dict[str, Any]


def validate_signing(value: Any) -> dict[str, Any] | None:
    """Check a signing setting from a user; raises ValueError with a readable message."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError('signing must be an object like {"provider": "stripe", "secrets": [...]}')
    provider = value.get("provider", "auto")
    if provider != "auto" and provider not in PROVIDERS:
        known = ", ".join(("auto", *PROVIDERS))
        raise ValueError(f"signing.provider must be one of {known}")
    secrets = value.get("secrets", [])
    if not isinstance(secrets, list) or not all(isinstance(s, str) for s in secrets):
        raise ValueError("signing.secrets must be a list of strings")
    secrets = [s.strip() for s in secrets if s.strip()]
    if len(secrets) > 10 or any(len(s) > 1024 for s in secrets):
        raise ValueError("signing.secrets: at most 10 secrets of at most 1024 characters")
    if any(re.search("[\ud800-\udfff]", s) for s in secrets):
        # Lone surrogates (JSON allows "\ud800") are not text: no page could show the secret.
        raise ValueError("signing.secrets may not contain unpaired surrogates (\\ud800-\\udfff)")
    return {"provider": provider, "secrets": secrets}


def called_url(
    *,
    public_url: str,
    scheme: str,
    headers: Iterable[tuple[str, str]] | Iterable[list[str]],
    bin_id: str,
    path: str,
    query: str,
) -> str:
    """The URL the sender called, as it would have written it (Twilio signs this URL)."""
    if public_url:
        base = public_url.rstrip("/")
    else:
        host = next((v for n, v in headers if n.lower() == "host"), "localhost")
        base = f"{scheme}://{host}"
    sub = "" if path == "/" else path
    return f"{base}/h/{bin_id}{sub}" + (f"?{query}" if query else "")


def check(
    signing: dict[str, Any] | None,
    *,
    method: str,
    url: str,
    headers: list[tuple[str, str]],
    body: bytes,
    received_at: datetime,
) -> Verdict:
    """The verdict for one request: {"provider", "status", "reason"}."""
    provider = (signing or {}).get("provider", "auto")
    secrets = (signing or {}).get("secrets", [])
    verdict = verify(
        provider,
        list(secrets),
        method=method,
        url=url,
        headers=headers,
        body=body,
        now=received_at.timestamp(),
    )
    return {"provider": verdict.provider, "status": verdict.status, "reason": verdict.reason}


def refresh(
    items: list[dict[str, Any]],
    bin_: dict[str, Any],
    *,
    recheck: Callable[[dict[str, Any]], Verdict],
    save: Callable[[int, Verdict, int], None],
) -> list[dict[str, Any]]:
    """Bring the verdicts of ``items`` (all of ``bin_``) up to the bin's signing revision."""
    for item in items:
        if item.get("signing_rev") != bin_["signing_rev"]:
            item["signature"] = recheck(item)
            item["signing_rev"] = bin_["signing_rev"]
            save(item["seq"], item["signature"], bin_["signing_rev"])
    return items
