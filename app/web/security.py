"""Response headers that make captured content inert in the UI.

Everything Hookbin shows came from strangers. Templates escape it; these headers are the backstop:
no inline script can run, scripts load only from ``/static/`` (a capture URL on the same origin may
answer ``application/javascript``, and must not be loadable as the UI's script), nothing is sniffed
into a different type, and view links never leak through a Referer.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, Response, current_app, request

from app.config import Settings
from app.web.lookup import services

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src {static}",
        "worker-src 'none'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "frame-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def _harden(response: Response) -> Response:
    static = request.host_url.rstrip("/") + "/static/"
    response.headers.setdefault(
        "Content-Security-Policy", CONTENT_SECURITY_POLICY.format(static=static)
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    return response


_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


def allowed_hosts(settings: Settings) -> frozenset[str] | None:
    """The host names pages and the API answer to; None: any.

    The public URL's host and ``HOOKBIN_ALLOWED_HOSTS``; with neither, a server that listens on
    loopback only answers to loopback names, so a page elsewhere cannot reach it through a name
    that resolves to 127.0.0.1 (DNS rebinding).
    """
    names = {h.strip().lower() for h in settings.allowed_hosts.split(",") if h.strip()}
    if settings.public_url:
        names.add(urlsplit(settings.public_url).netloc.lower())
    if names:
        return frozenset(names)
    return None if settings.exposed else _LOOPBACK_NAMES


def _host_allowed(host: str, allowed: frozenset[str]) -> bool:
    host = host.lower()
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return host in allowed or name in allowed


def _check_host() -> Response | None:
    allowed = allowed_hosts(services().settings)
    if allowed is None or _host_allowed(request.host, allowed):
        return None
    body = {"error": "this server does not answer to that host name (HOOKBIN_ALLOWED_HOSTS)"}
    response = current_app.json.response(body)
    response.status_code = 421
    return response


def init_app(app: Flask) -> None:
    """Add the headers to every Flask response (capture answers set their own), and answer only
    to this server's own host names."""
    app.before_request(_check_host)
    app.after_request(_harden)
