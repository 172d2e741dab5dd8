"""Shared fixtures: real Hookbin servers (gunicorn on a free port), SQLite files, PostgreSQL.

Servers are started exactly as a user starts them, with ``hookbin serve``, so the tests exercise
gunicorn's gevent worker, the capture WSGI app, Flask and flask-sock together.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """One running ``hookbin serve``."""

    port: int
    database_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def create_bin(self) -> dict:
        response = httpx.post(f"{self.url}/api/bins", timeout=10)
        assert response.status_code == 201, response.text
        return response.json()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int | None = None) -> None:
        if self.process.poll() is None:
            if sig is None:
                self.process.terminate()
            else:
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(
    database_url: str,
    log_dir: Path,
    *,
    workers: int = 1,
    port: int | None = None,
    extra_env: dict[str, str] | None = None,
) -> Server:
    """Start ``hookbin serve`` and wait until it answers."""
    port = port or free_port()
    env = {
        **os.environ,
        "HOOKBIN_DATABASE_URL": database_url,
        "HOOKBIN_ACCESS_LOG": "false",
        "HOOKBIN_STREAM_POLL_SECONDS": "30",
        **(extra_env or {}),
    }
    log_path = log_dir / f"server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(port, database_url, process, log_path, env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"hookbin serve exited:\n{server.log()}")
        try:
            if httpx.get(server.url + "/", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"hookbin serve did not come up:\n{server.log()}")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite file in the test's own directory."""
    return f"sqlite:///{tmp_path / 'hookbin.sqlite3'}"


@pytest.fixture
def server(sqlite_url: str, tmp_path: Path) -> Iterator[Server]:
    """One Hookbin process (one gevent worker) on a fresh SQLite file."""
    srv = start_server(sqlite_url, tmp_path)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One Hookbin process shared by a whole test module (each test makes its own bin)."""
    tmp = tmp_path_factory.mktemp("shared")
    srv = start_server(f"sqlite:///{tmp / 'hookbin.sqlite3'}", tmp)
    yield srv
    srv.stop()


def _pg_base_url() -> str:
    return os.environ.get("HOOKBIN_TEST_POSTGRES_URL", DEFAULT_PG)


def _libpq(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A brand-new PostgreSQL database, migrated, dropped afterwards.

    Skips with the reason when no server answers at HOOKBIN_TEST_POSTGRES_URL (default
    postgresql+psycopg://postgres@127.0.0.1:5432/test).
    """
    from sqlalchemy.engine import make_url

    base = _pg_base_url()
    try:
        admin = psycopg.connect(_libpq(base), autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("HOOKBIN_REQUIRE_POSTGRES"):
            raise
        pytest.skip(f"PostgreSQL not reachable at {base}: {exc}".splitlines()[0])
    name = f"hookbin_test_{secrets.token_hex(4)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    from app.storage.migrate import upgrade

    upgrade(url)
    try:
        yield url
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def raw_http(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes to the server and return everything it answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)
