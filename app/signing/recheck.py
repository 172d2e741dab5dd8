"""Signature verdicts of stored requests, re-checked where they are shown.

A verdict is stored with each capture under the bin's ``signing_rev``; once the bin's secrets
change, the requests shown are judged again, as of their arrival, and the new verdicts saved.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.config import Settings
from app.signing import verdicts
from app.storage.repository import Storage


def with_verdicts(
    storage: Storage, settings: Settings, bin_: dict[str, Any], items: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``items`` of ``bin_`` with signature verdicts under the bin's current secrets."""

    def recheck(item: dict[str, Any]) -> verdicts.Verdict:
        headers = [(h[0], h[1]) for h in item["headers"]]
        forwarded = next((v for n, v in headers if n.lower() == "x-forwarded-proto"), "")
        forwarded = forwarded.split(",")[0].strip()
        scheme = forwarded if settings.proxy_hops and forwarded else "http"
        return verdicts.check(
            bin_["signing"],
            method=item["method"],
            url=verdicts.called_url(
                public_url=settings.public_url,
                scheme=scheme,
                headers=headers,
                bin_id=bin_["id"],
                path=item["path"],
                query=item["query_string"],
            ),
            headers=headers,
            body=storage.get_body(item["seq"]),
            # As of arrival: a timestamp that was fresh then is not stale now.
            received_at=datetime.fromisoformat(item["received_at"].replace("Z", "+00:00")),
        )

    return verdicts.refresh(items, bin_, recheck=recheck, save=storage.save_verdict)
