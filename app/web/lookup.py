"""What every view starts from: this app's services and storage, and verdicts as of now.

The bin or request a URL names is looked up through ``app.web.auth``, which checks access first.
"""

from __future__ import annotations

from typing import Any

from app.signing.recheck import with_verdicts
from app.storage.repository import Storage
from app.wiring import Services, current_services

__all__ = ["services", "storage", "verdicts_of"]

services = current_services


def storage() -> Storage:
    """The storage of the app handling the current request."""
    return current_services().storage


def verdicts_of(bin_: dict[str, Any], items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``items`` with signature verdicts under the bin's current secrets."""
    current: Services = current_services()
    return with_verdicts(current.storage, current.settings, bin_, items)
