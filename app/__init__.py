"""Hookbin: a self-hosted HTTP request inspector for people who build against webhooks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from app.config import PROJECT_ROOT, Settings


def create_app(settings: Settings | None = None) -> Flask:
    """Application factory: build a Hookbin app for ``settings`` (default: from the environment).

    Background work (live notifications from other processes, auto-forward deliveries) starts
    when a gunicorn worker is ready, or when the caller runs ``app.extensions["hookbin"].start()``.
    """
    from app.bins import binsfile
    from app.bins.names import reserved_names
    from app.capture.handler import CaptureDispatcher, make_capture_app
    from app.web import api, assets, pages, replay_pages, security, stream
    from app.wiring import build_services

    settings = settings or Settings.from_env()
    app = Flask(
        __name__,
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
    )
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024  # UI and API bodies; captures have their own cap
    app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": 20}
    app.config["HOOKBIN"] = settings

    services = build_services(settings)
    app.extensions["hookbin"] = services

    assets.init_app(app)
    security.init_app(app)
    app.register_blueprint(pages.bp)
    app.register_blueprint(replay_pages.bp)
    app.register_blueprint(api.bp)
    stream.init_app(app)

    # Only the file's name is shown on bin pages, not where it lives on the server.
    shown = Path(settings.bins_file).name if settings.bins_file else None

    @app.context_processor
    def _bins_file_name() -> dict[str, Any]:
        return {"bins_file_name": shown}

    if settings.bins_file:
        # After every route is registered: names in the bins file may not shadow any of them.
        binsfile.apply(services.storage, settings.bins_file, reserved_names(app.url_map))

    capture = make_capture_app(
        settings, services.storage, services.batcher, services.delivery.wake, services.limits
    )
    wsgi = CaptureDispatcher(capture, app.wsgi_app)
    if settings.proxy_hops:
        wsgi = ProxyFix(
            wsgi,
            x_for=settings.proxy_hops,
            x_proto=settings.proxy_hops,
            x_host=settings.proxy_hops,
            x_port=settings.proxy_hops,
        )
    app.wsgi_app = wsgi  # type: ignore[method-assign]
    return app


def reserved_bin_names() -> frozenset[str]:
    """The names no bin may take in a Hookbin app, found without touching any database."""
    from app.bins.names import reserved_names

    app = create_app(Settings(database_url="sqlite://"))
    try:
        return reserved_names(app.url_map)
    finally:
        app.extensions["hookbin"].close()
