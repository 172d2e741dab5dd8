"""Hookbin: a self-hosted HTTP request inspector for people who build against webhooks."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from app.config import PROJECT_ROOT, Settings


def create_app(settings: Settings | None = None, *, check_schema: bool = True) -> Flask:
    """Application factory: build a Hookbin app for ``settings`` (default: from the environment).

    Background work (live notifications from other processes, auto-forward deliveries) starts
    when a gunicorn worker is ready, or when the caller runs ``app.extensions["hookbin"].start()``.

    Raises ``app.ops.schema.NotMigrated`` when the database answers but is not on the newest
    schema (``check_schema=False`` skips that, for work that never touches the database). A
    database that does not answer yet is no reason to refuse: ``/readyz`` reports it.
    """
    from app.bins import binsfile
    from app.bins.names import reserved_names
    from app.capture.handler import CaptureDispatcher, make_capture_app
    from app.ops import logs, metrics, routes
    from app.web import access_pages, api, assets, auth, pages, replay_pages, security, stream
    from app.wiring import build_services

    settings = settings or Settings.from_env()
    logs.configure(settings.log_format)
    app = Flask(
        __name__,
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
    )
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024  # UI and API bodies; captures have their own cap
    app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": 20}
    app.config["HOOKBIN"] = settings

    services = build_services(settings)
    if check_schema:
        _require_schema(services, settings)
    app.extensions["hookbin"] = services

    assets.init_app(app)
    security.init_app(app)
    app.before_request(auth.refuse_cross_site_writes)
    app.register_blueprint(pages.bp)
    app.register_blueprint(replay_pages.bp)
    app.register_blueprint(access_pages.bp)
    app.register_blueprint(api.bp)
    stream.init_app(app)
    routes.init_app(app, services.storage, settings)

    # Only the file's name is shown on bin pages, not where it lives on the server.
    shown = Path(settings.bins_file).name if settings.bins_file else None

    @app.context_processor
    def _bins_file_name() -> dict[str, Any]:
        return {"bins_file_name": shown}

    if settings.bins_file:
        # After every route is registered: names in the bins file may not shadow any of them.
        binsfile.apply(services.storage, settings.bins_file, reserved_names(app.url_map))

    capture = make_capture_app(
        settings,
        services.storage,
        services.batcher,
        services.delivery.wake,
        services.limits,
    )
    if settings.log_format.strip().lower() == "json":
        capture = logs.tag_captures(capture)
    capture = metrics.measure_captures(capture)
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


def _require_schema(services: Any, settings: Settings) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from app.ops import schema

    try:
        services.storage.read(schema.require_migrated, settings.database_url)
    except SQLAlchemyError as exc:
        logging.getLogger(__name__).warning(
            "the database at %s does not answer (%s); /readyz says 503 until it does",
            schema.shown_url(settings.database_url),
            type(exc).__name__,
        )
    except schema.NotMigrated:
        services.close()
        raise


def reserved_bin_names() -> frozenset[str]:
    """The names no bin may take in a Hookbin app, found without touching any database."""
    from app.bins.names import reserved_names

    app = create_app(Settings(database_url="sqlite://"), check_schema=False)
    try:
        return reserved_names(app.url_map)
    finally:
        app.extensions["hookbin"].close()
