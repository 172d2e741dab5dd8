"""Hookbin: a self-hosted HTTP request inspector for people who build against webhooks."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from app.config import PROJECT_ROOT, Settings


def create_app(settings: Settings | None = None) -> Flask:
    """Application factory: build a Hookbin app for ``settings`` (default: from the environment)."""
    from app.bins import binsfile
    from app.capture.handler import CaptureDispatcher, make_capture_app
    from app.web import api, assets, security, stream
    from app.web import pages as web
    from app.web import replay_pages as webreplay
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
    app.register_blueprint(web.bp)
    app.register_blueprint(webreplay.bp)
    app.register_blueprint(api.bp)
    stream.init_app(app)
    # After every route is registered: names in the bins file may not shadow any of them.
    binsfile.init_app(app, services)

    wsgi = CaptureDispatcher(make_capture_app(services), app.wsgi_app)
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
