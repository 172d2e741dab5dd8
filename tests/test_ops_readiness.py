"""``/readyz`` and the refusal to start on a database that is not migrated."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from app import create_app
from app.config import Settings
from app.ops.schema import NotMigrated, head_revision
from app.storage.migrate import downgrade, upgrade
from tests.conftest import ROOT, _libpq, _pg_base_url, free_port


@pytest.fixture
def empty_postgres_url() -> Iterator[str]:
    """A brand-new PostgreSQL database that was never migrated, dropped afterwards."""
    base = _pg_base_url()
    try:
        admin = psycopg.connect(_libpq(base), autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("HOOKBIN_REQUIRE_POSTGRES"):
            raise
        pytest.skip(f"PostgreSQL not reachable at {base}: {exc}".splitlines()[0])
    name = f"hookbin_test_{secrets.token_hex(4)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _ready(url: str, *, check_schema: bool = True) -> tuple[int, dict, dict]:
    app = create_app(Settings(database_url=url), check_schema=check_schema)
    try:
        response = app.test_client().get("/readyz")
        return response.status_code, response.get_json(), dict(response.headers)
    finally:
        app.extensions["hookbin"].close()


@pytest.mark.postgres
def test_ready_on_a_migrated_postgres(postgres_url: str) -> None:
    status, body, _ = _ready(postgres_url)
    assert status == 200
    assert body == {"ready": True, "revision": head_revision()}


@pytest.mark.postgres
def test_not_ready_on_an_unmigrated_postgres_until_it_is_migrated(
    empty_postgres_url: str,
) -> None:
    # The app may have started while the database was not there yet; it comes up empty.
    status, body, headers = _ready(empty_postgres_url, check_schema=False)
    assert status == 503
    assert body["ready"] is False
    assert "not migrated" in body["reason"]
    assert int(headers["Retry-After"]) > 0

    upgrade(empty_postgres_url)
    assert _ready(empty_postgres_url)[0] == 200


def test_not_ready_on_a_database_behind_the_newest_revision(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    upgrade(url)
    app = create_app(Settings(database_url=url))
    try:
        client = app.test_client()
        assert client.get("/readyz").status_code == 200
        downgrade(url, "0003")
        response = client.get("/readyz")
        assert response.status_code == 503
        assert "revision 0003" in response.get_json()["reason"]
    finally:
        app.extensions["hookbin"].close()


def test_not_ready_while_the_database_does_not_answer() -> None:
    url = f"postgresql+psycopg://nobody:pw@127.0.0.1:{free_port()}/none"
    # Starting is allowed (the database may come up later); readiness says it is not there.
    status, body, headers = _ready(url)
    assert status == 503
    assert "does not answer" in body["reason"]
    assert "Retry-After" in headers


@pytest.mark.postgres
def test_the_app_factory_refuses_an_unmigrated_postgres(empty_postgres_url: str) -> None:
    password_url = make_url(empty_postgres_url).set(password="hunter2-pw")
    url = password_url.render_as_string(hide_password=False)
    with pytest.raises(NotMigrated) as caught:
        create_app(Settings(database_url=url))
    message = str(caught.value)
    assert "is not migrated" in message and "hookbin migrate" in message
    assert make_url(empty_postgres_url).database in message
    assert "hunter2-pw" not in message


def test_the_app_factory_refuses_an_unmigrated_sqlite_file(tmp_path: Path) -> None:
    with pytest.raises(NotMigrated, match="is not migrated; run `hookbin migrate`"):
        create_app(Settings(database_url=f"sqlite:///{tmp_path / 'empty.sqlite3'}"))


def _serve(url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOOKBIN_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(free_port()), "--workers", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.postgres
def test_serve_refuses_an_unmigrated_postgres_with_one_error(
    empty_postgres_url: str, tmp_path: Path
) -> None:
    done = _serve(empty_postgres_url, tmp_path)
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "Traceback" not in output
    [error] = [line for line in output.splitlines() if line.startswith("Error:")]
    assert "is not migrated; run `hookbin migrate`" in error
    assert "Hookbin did not start." in output
    assert "Booting worker" not in output  # gunicorn never started


def test_serve_still_migrates_a_new_sqlite_file(tmp_path: Path) -> None:
    from tests.conftest import start_server

    server = start_server(f"sqlite:///{tmp_path / 'fresh.sqlite3'}", tmp_path)
    try:
        import httpx

        response = httpx.get(f"{server.url}/readyz", timeout=10)
        assert response.status_code == 200
        assert response.json()["revision"] == head_revision()
    finally:
        server.stop()
