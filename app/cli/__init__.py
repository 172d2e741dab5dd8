"""The ``hookbin`` command: serve, migrate, build the front-end bundle."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from app.config import PROJECT_ROOT, Settings


@click.group()
def main() -> None:
    """Hookbin: a self-hosted HTTP request inspector for webhooks."""


@main.command()
def migrate() -> None:
    """Apply database migrations to HOOKBIN_DATABASE_URL."""
    from app.storage.migrate import upgrade

    settings = Settings.from_env()
    upgrade(settings.database_url)
    click.echo("database is up to date")


@main.command("build-assets")
def build_assets() -> None:
    """Bundle htmx, its websocket extension and Hookbin's script into static/gen."""
    _build_assets()
    click.echo("assets built")


def _build_assets() -> None:
    from dataclasses import replace

    from app import create_app
    from app.web import assets

    # Bundling assets must not write to the database, so the bins file is left to the server
    # and the schema unchecked (``hookbin build-assets`` needs no database at all).
    assets.build(create_app(replace(Settings.from_env(), bins_file=""), check_schema=False))


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
    from app.ops import logs, multiproc

    os.environ["HOOKBIN_LISTEN_PORT"] = str(port)
    os.environ["HOOKBIN_LISTEN_HOST"] = host
    try:
        settings = Settings.from_env()
        logs.configure(settings.log_format)
    except ValueError as exc:
        raise click.ClickException(f"{exc}\nHookbin did not start.") from None
    if settings.bins_file:
        _check_bins_file(settings)
    if settings.is_sqlite:
        from app.storage.migrate import upgrade

        upgrade(settings.database_url)
    else:
        # PostgreSQL is migrated explicitly (``hookbin migrate``), once for every host sharing it.
        _check_schema(settings)
    _build_assets()
    _say(settings, f"Hookbin on http://{host}:{port} ({workers} workers, {_describe(settings)})")
    # Each start gets its own metrics directory; gunicorn's master (this very process, once it
    # execs) removes it when it exits.
    multiproc.fresh_dir()
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
    sys.stderr.flush()
    # gunicorn takes over this process, so signals reach its master directly.
    os.execv(sys.executable, argv)  # noqa: S606 - fixed argv, no shell


def _say(settings: Settings, message: str) -> None:
    """A start-up message: a plain line, or a log line when logs are JSON."""
    if settings.log_format.strip().lower() == "json":
        logging.getLogger("app.cli").info("%s", message)
    else:
        click.echo(message)


def _check_schema(settings: Settings) -> None:
    """Refuse to start on a database that answers but is not migrated: one error, here."""
    from sqlalchemy.exc import SQLAlchemyError

    from app.ops import schema
    from app.storage.db import make_engine

    engine = make_engine(settings.database_url)
    try:
        schema.require_migrated(engine, settings.database_url)
    except SQLAlchemyError as exc:
        # Not up yet, perhaps: workers start anyway and /readyz answers 503 until it is.
        logging.getLogger("app.cli").warning(
            "the database at %s does not answer yet (%s)",
            schema.shown_url(settings.database_url),
            type(exc).__name__,
        )
    except schema.NotMigrated as exc:
        raise click.ClickException(f"{exc}\nHookbin did not start.") from None
    finally:
        engine.dispose()


def _check_bins_file(settings: Settings) -> None:
    """Refuse to start on a broken bins file, before any worker tries to apply it."""
    from app import reserved_bin_names
    from app.bins import binsfile

    resolved = Path(settings.bins_file).expanduser().resolve()
    try:
        defined = binsfile.read(resolved, reserved_bin_names())
    except binsfile.BinsFileError as exc:
        raise click.ClickException(f"{exc}\nHookbin did not start.") from None
    # gunicorn runs from the project directory (--chdir): give it the file just checked.
    os.environ["HOOKBIN_BINS_FILE"] = str(resolved)
    _say(settings, binsfile.describe(resolved, defined))


def _describe(settings: Settings) -> str:
    if settings.is_sqlite:
        return "SQLite " + settings.database_url.split("///", 1)[-1]
    return "PostgreSQL"


@main.command()
@click.argument("bin_id", metavar="BIN")
@click.option(
    "--forward-to",
    required=True,
    metavar="URL",
    help="Local URL each request is sent to; the captured sub-path and query are appended.",
)
@click.option(
    "--server",
    default="http://127.0.0.1:8000",
    show_default=True,
    envvar="HOOKBIN_SERVER",
    show_envvar=True,
    metavar="URL",
    help="The Hookbin server holding the bin.",
)
@click.option(
    "--timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds before the local target is given up on (per network step).",
)
@click.option(
    "--state",
    "state_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where the resume position is kept "
    "(default: $XDG_STATE_HOME/hookbin/listen-BIN.json, else ~/.local/state/hookbin/...).",
)
@click.option("--from-now", is_flag=True, help="Ignore the saved position: only new requests.")
@click.option("--from-start", is_flag=True, help="Forward every request the bin holds first.")
@click.option("--insecure", is_flag=True, help="Do not verify the local target's TLS certificate.")
@click.option(
    "--token",
    envvar="HOOKBIN_TOKEN",
    show_envvar=True,
    metavar="TOKEN",
    help="The bin's API token (or an operator token): the server needs one to read the bin.",
)
def listen(
    bin_id: str,
    forward_to: str,
    server: str,
    token: str | None,
    timeout: float,
    state_file: Path | None,
    from_now: bool,
    from_start: bool,
    insecure: bool,
) -> None:
    """Forward the requests BIN receives to a local URL, as they arrive.

    Runs on your machine against a Hookbin server elsewhere. Each answer of the local target is
    reported back and shows on the bin page. After a disconnect, a server restart or a restart of
    this command, forwarding resumes after the last request handled: nothing is missed and
    nothing is sent twice.
    """
    import signal

    from app.cli.listen_urls import forwards_into_capture, local_target, server_base
    from app.cli.listener import Listener

    if from_now and from_start:
        raise click.UsageError("--from-now and --from-start cannot be used together")
    try:
        server_base(server)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--server") from None
    try:
        local_target(forward_to)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--forward-to") from None
    if forwards_into_capture(forward_to, server):
        raise click.BadParameter(
            "that is a capture URL of the server itself: every forward would be captured and "
            "forwarded again, forever",
            param_hint="--forward-to",
        )

    def _stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # Python leaves SIGINT ignored when it starts with it ignored (a background job of a shell
    # without job control, some CI runners): Ctrl-C must stop this command all the same.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop)  # `kill` stops as cleanly as Ctrl-C
    listener = Listener(
        server,
        bin_id,
        forward_to,
        state_path=state_file,
        start="start" if from_start else "now" if from_now else "saved",
        timeout=timeout,
        verify_tls=not insecure,
        token=token,
    )
    sys.exit(listener.run())


@main.group()
def bins() -> None:
    """Bins defined in a bins file (HOOKBIN_BINS_FILE)."""


@bins.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def bins_check(file: Path) -> None:
    """Validate the bins file FILE as a starting server would, without starting one.

    Checks the TOML, every name (rule, reserved words), signing and responses, and that every
    env:NAME secret is set in this environment. Exit code 0 when the file is usable, 1 if not.
    """
    from app import reserved_bin_names
    from app.bins import binsfile

    try:
        defined = binsfile.read(file, reserved_bin_names())
    except binsfile.BinsFileError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(binsfile.describe(file, defined) + ": OK")
