"""Absolute URLs handed to users: capture and view URLs of a bin."""

from __future__ import annotations

from flask import request, url_for

from app.capture.handler import CAPTURE_PREFIX
from app.web.lookup import services


def base_url() -> str:
    """HOOKBIN_PUBLIC_URL when set, else the scheme and host the browser used."""
    configured = services().settings.public_url
    return (configured or request.host_url).rstrip("/")


def capture_url(bin_id: str) -> str:
    """Where senders deliver to."""
    return f"{base_url()}{CAPTURE_PREFIX}{bin_id}"


def view_url(bin_id: str, key: str | None = None) -> str:
    """The bin's page; with ``key``, its view link, which opens the bin for whoever holds it."""
    if key:
        return base_url() + url_for("web.bin_page", bin_id=bin_id, key=key)
    return base_url() + url_for("web.bin_page", bin_id=bin_id)
