"""Response headers that make captured content inert in the UI.

Everything Hookbin shows came from strangers. Templates escape it; these headers are the backstop:
no inline script can run, scripts load only from ``/static/`` (a capture URL on the same origin may
answer ``application/javascript``, and must not be loadable as the UI's script), nothing is sniffed
into a different type, and view links never leak through a Referer.
"""

from __future__ import annotations

from flask import Flask, Response, request

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


def init_app(app: Flask) -> None:
    """Add the headers to every Flask response (capture answers set their own)."""
    app.after_request(_harden)
