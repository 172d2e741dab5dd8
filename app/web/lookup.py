"""What every view starts from: this app's services, and the bin or request a URL names.

``abort(404)`` is answered as JSON under ``/api`` and as a page elsewhere (each blueprint's
error handler), so pages and the API share these lookups.
"""

from __future__ import annotations

from typing import Any

from flask import abort

from app.signing.recheck import with_verdicts
from app.storage.repository import Storage
from app.wiring import Services, current_services

__all__ = ["bin_or_404", "request_in_bin", "request_or_404", "services", "storage", "verdicts_of"]

services = current_services


def storage() -> Storage:
    """The storage of the app handling the current request."""
    return current_services().storage


def bin_or_404(bin_id: str) -> dict[str, Any]:
    """The bin ``bin_id``, or a 404 answer."""
    found = storage().get_bin(bin_id)
    if found is None:
        abort(404)
    return found


def request_or_404(request_id: str) -> dict[str, Any]:
    """The request ``request_id``, or a 404 answer."""
    found = storage().get_request(request_id)
    if found is None:
        abort(404)
    return found


def request_in_bin(bin_id: str, request_id: str) -> dict[str, Any]:
    """The request ``request_id`` when it belongs to bin ``bin_id``, or a 404 answer."""
    item = storage().get_request(request_id)
    if item is None or item["bin_id"] != bin_id:
        abort(404)
    return item


def verdicts_of(bin_: dict[str, Any], items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``items`` with signature verdicts under the bin's current secrets."""
    current: Services = current_services()
    return with_verdicts(current.storage, current.settings, bin_, items)
