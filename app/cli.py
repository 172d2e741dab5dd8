"""The ``hookbin`` command: serve, migrate, build the front-end bundle."""

from __future__ import annotations

import os
import sys

import click

from app.config import PROJECT_ROOT, Settings


@click.group()
def main() -> None:
    """Hookbin: a self-hosted HTTP request inspector for webhooks."""


@main.command()
def migrate() -> None:
    """Apply database migrations to HOOKBIN_DATABASE_URL."""
    from app.migrate import upgrade

    settings = Settings.from_env()
    upgrade(settings.database_url)
    click.echo("database is up to date")


@main.command("build-assets")
def build_assets() -> None:
    """Bundle htmx, its websocket extension and Hookbin's script into static/gen."""
    _build_assets()
    click.echo("assets built")


def _build_assets() -> None:
    from app import assets, create_app

    assets.build(create_app(Settings.from_env()))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--workers",
    default=lambda: os.cpu_count() or 1,
    type=int,
    help="gunicorn gevent workers (default: one per core).",
)
def serve(host: str, port: int, workers: int) -> None:
    """Run Hookbin under gunicorn (migrating an SQLite database first)."""
    os.environ["HOOKBIN_LISTEN_PORT"] = str(port)
    settings = Settings.from_env()
    if settings.is_sqlite:
        from app.migrate import upgrade

        upgrade(settings.database_url)
    _build_assets()
    click.echo(f"Hookbin on http://{host}:{port} ({workers} workers, {_describe(settings)})")
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        str(PROJECT_ROOT / "app" / "gunicorn_conf.py"),
        "--bind",
        f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "--workers",
        str(workers),
        "--chdir",
        str(PROJECT_ROOT),
        "app.wsgi:app",
    ]
    sys.stdout.flush()
    # gunicorn takes over this process, so signals reach its master directly.
    os.execv(sys.executable, argv)  # noqa: S606 - fixed argv, no shell


def _describe(settings: Settings) -> str:
    if settings.is_sqlite:
        return "SQLite " + settings.database_url.split("///", 1)[-1]
    return "PostgreSQL"


if __name__ == "__main__":
    main()
