"""Shared fixtures: real Hookbin servers, in-process apps, SQLite files, PostgreSQL, Chromium.

Servers are started exactly as a user starts them, with ``hookbin serve`` and its defaults, so
the tests that need one exercise gunicorn's gevent worker, the capture WSGI app, Flask and
flask-sock together. Tests of pages and the API that do not depend on the server use ``client``:
the same app built by ``create_app`` and driven in-process through Flask's test client.

The suite runs in parallel (pytest-xdist): every server gets a free port, every database its own
file or PostgreSQL database, so tests on different workers never share state.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
import websocket
from flask import Flask
from flask.testing import FlaskClient

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CHROMIUM = Path(os.environ.get("HOOKBIN_CHROMIUM", "/usr/bin/chromium"))

#: For servers whose tests prove that live updates are pushed across processes: with the safety
#: poll this far apart, a request that reaches a viewer in time came by push.
PUSH_ONLY = {"HOOKBIN_STREAM_POLL_SECONDS": "30"}


def wait_until(check: Callable[[], object], timeout: float = 10.0, what: str = "it") -> None:
    """Poll ``check`` until it returns something true; fail saying ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


#: The operator token every test server and in-process app accepts. The suite reads and manages
#: bins as an operator, so that tests of capture, replay or live push need not carry each bin's
#: token around; tests/test_access.py covers bin tokens, share links and the browser's cookie, and
#: its tests (marker ``anonymous``) send exactly the credentials they name.
TEST_OPERATOR = "hbt_test-operator-0123456789abcdef0123456789abcdef"
os.environ.setdefault("HOOKBIN_TOKEN", TEST_OPERATOR)  # for `hookbin listen` subprocesses

#: Ports of the Hookbin servers the tests started (requests elsewhere are left alone).
HOOKBIN_PORTS: set[int] = set()


@pytest.fixture(autouse=True)
def _as_operator(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests the test sends to its Hookbin servers carry the operator token, unless they carry
    credentials of their own; capture URLs (``/h/...``) never do, as no sender would."""
    if request.node.get_closest_marker("anonymous"):
        return
    bearer = f"Bearer {TEST_OPERATOR}"
    real_build = httpx.Client.build_request

    def build_request(self: httpx.Client, *args: object, **kwargs: object) -> httpx.Request:
        built = real_build(self, *args, **kwargs)  # type: ignore[arg-type]
        url = built.url
        if (
            url.port in HOOKBIN_PORTS
            and not url.path.startswith("/h/")
            and "authorization" not in built.headers
        ):
            built.headers["Authorization"] = bearer
        return built

    monkeypatch.setattr(httpx.Client, "build_request", build_request)
    real_connect = websocket.create_connection

    def create_connection(url: str, *args: object, **kwargs: object) -> object:
        header = list(kwargs.pop("header", None) or [])  # type: ignore[call-overload]
        if not any(str(h).lower().startswith("authorization:") for h in header):
            header.append(f"Authorization: {bearer}")
        return real_connect(url, *args, header=header, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(websocket, "create_connection", create_connection)
    real_init = FlaskClient.__init__

    def client_init(self: FlaskClient, *args: object, **kwargs: object) -> None:
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]
        self.environ_base.setdefault("HTTP_AUTHORIZATION", bearer)

    monkeypatch.setattr(FlaskClient, "__init__", client_init)


#: Fixtures of tests that start servers, processes or a browser of their own.
_HEAVY_FIXTURES = {"server", "sqlite_url", "postgres_url", "page", "thread_server", "instances"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests that start servers or a browser first (in their order, then the rest).

    Parallel workers take tests in collection order: a long test picked up last keeps the run
    waiting while the other workers are idle.
    """
    items.sort(key=lambda item: not _HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """With ``--dist load`` (pyproject's addopts), the browser stories (files named
    ``*browser*``) go to one worker, so one Chromium is started; every other test goes to
    whichever worker is free. pytest-xdist's own ``xdist_group`` cannot do this under pytest
    9.2: it renames node ids through an attribute pytest no longer reads."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class BrowserStoriesTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "browser" if "browser" in Path(nodeid.split("::", 1)[0]).stem else nodeid

    return BrowserStoriesTogether(config, log)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Listening:
    """Something serving Hookbin on ``port`` of 127.0.0.1."""

    port: int

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


@dataclass
class Server(Listening):
    """One running ``hookbin serve``."""

    port: int
    database_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        """Stop at once (gunicorn's quick shutdown): cleanup, once a test is done with it.

        ``stop`` is the graceful stop a deployment gets; it waits up to a second for the worker
        to notice, which only tests of stopping and restarting need.
        """
        self.stop(signal.SIGINT)

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
    """Start ``hookbin serve`` with its defaults (plus ``extra_env``); wait until it answers."""
    port = port or free_port()
    env = {
        **os.environ,
        "HOOKBIN_ADMIN_TOKEN": TEST_OPERATOR,
        "HOOKBIN_DATABASE_URL": database_url,
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
    HOOKBIN_PORTS.add(port)
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
    srv.close()


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One Hookbin process shared by every test of a test process (each makes its own bins)."""
    tmp = tmp_path_factory.mktemp("shared")
    srv = start_server(f"sqlite:///{tmp / 'hookbin.sqlite3'}", tmp)
    yield srv
    srv.close()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file with every migration applied, made once and copied by ``app``."""
    from app.storage.migrate import upgrade

    path = tmp_path_factory.mktemp("template") / "hookbin.sqlite3"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def make_app(tmp_path: Path, migrated_sqlite: Path) -> Iterator[Callable[..., Flask]]:
    """Build Hookbin apps in this process: ``make_app(**settings)`` (``Settings`` fields).

    Each gets a fresh migrated SQLite file unless ``database`` names one to share (another app's
    ``app.config["HOOKBIN"].database_url``). All are closed after the test.
    """
    from app import create_app
    from app.config import Settings

    made: list[Flask] = []

    def make(database: str | None = None, **settings: object) -> Flask:
        if database is None:
            db = tmp_path / f"app-{len(made)}.sqlite3"
            shutil.copyfile(migrated_sqlite, db)
            database = f"sqlite:///{db}"
        settings.setdefault("admin_token", TEST_OPERATOR)
        built = create_app(Settings(database_url=database, **settings))  # type: ignore[arg-type]
        made.append(built)
        return built

    yield make
    for built in made:
        built.extensions["hookbin"].close()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    """The Hookbin app, built by ``create_app`` in this process on a fresh migrated SQLite file."""
    return make_app()


@dataclass
class ThreadServer(Listening):
    """An in-process app served over HTTP by werkzeug's threaded server, for tests of what the
    app does over time (deliveries, retries) that need no gunicorn: no process to start."""

    port: int
    app: Flask


@pytest.fixture
def thread_server(make_app: Callable[..., Flask]) -> Iterator[Callable[..., ThreadServer]]:
    """``thread_server(**settings)``: an app from ``make_app`` listening on a free port."""
    from werkzeug.serving import make_server

    running: list[tuple[object, threading.Thread]] = []

    def start(**settings: object) -> ThreadServer:
        http = make_server("127.0.0.1", 0, lambda environ, start_response: [], threaded=True)
        # The app learns its port as ``hookbin serve`` tells it (replays to itself are refused).
        http.app = make_app(listen_port=http.server_port, **settings)
        # What a gunicorn worker does once it is ready: start deliveries and notifications.
        http.app.extensions["hookbin"].start()
        # A short poll interval: shutting the server down waits for its loop to look.
        thread = threading.Thread(target=http.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        running.append((http, thread))
        HOOKBIN_PORTS.add(http.server_port)
        return ThreadServer(http.server_port, http.app)

    yield start
    for http, thread in running:
        http.shutdown()  # type: ignore[attr-defined]
        http.server_close()  # type: ignore[attr-defined]
        thread.join(timeout=10)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """Flask's test client for ``app``: pages and the API without a server in between."""
    return app.test_client()


def create_bin(client: FlaskClient, **fields: object) -> dict:
    """Create a bin through the API of an in-process app; return its JSON."""
    response = client.post("/api/bins", json=fields or None)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def _pg_base_url() -> str:
    return os.environ.get("HOOKBIN_TEST_POSTGRES_URL", DEFAULT_PG)


def _libpq(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def new_postgres_database() -> Iterator[str]:
    """A brand-new PostgreSQL database, migrated, dropped afterwards; yields its URL.

    Each has a random name, so tests on parallel workers never share one. Skips with the reason
    when no server answers at HOOKBIN_TEST_POSTGRES_URL (default
    postgresql+psycopg://postgres@127.0.0.1:5432/test), or fails with HOOKBIN_REQUIRE_POSTGRES.
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


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A brand-new PostgreSQL database for one test (see ``new_postgres_database``)."""
    with new_postgres_database() as url:
        yield url


# -- the browser stories: Debian's Chromium driven by Playwright ----------------------------------

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1280, "height": 800}
#: Generous: a slow CI box still answers well within this.
WAIT_MS = 10_000


_REQUIRED = "a browser is required here (CI or HOOKBIN_REQUIRE_BROWSER=1)"


def browser_required() -> bool:
    """True where a missing browser must fail the run: in CI, or with HOOKBIN_REQUIRE_BROWSER=1."""
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return ci or os.environ.get("HOOKBIN_REQUIRE_BROWSER", "").strip() == "1"


def browser_missing() -> str | None:
    """Why the browser stories cannot run here, or None when Chromium and Playwright are there."""
    try:
        import playwright.sync_api  # noqa: F401 - only whether it imports
    except ImportError:
        return "needs the playwright package (pip install -e '.[test]')"
    if not CHROMIUM.exists():
        return f"needs Debian's Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


def browser_api():
    """``playwright.sync_api``, for a browser test module to import its helpers from.

    Without Playwright the module is skipped, saying why, except where a browser is required:
    there it fails to be collected, so that the run fails.
    """
    try:
        from playwright import sync_api
    except ImportError:
        reason = "needs the playwright package (pip install -e '.[test]')"
        if browser_required():
            pytest.fail(f"{reason}; {_REQUIRED}")
        pytest.skip(reason, allow_module_level=True)
    return sync_api


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked ``browser`` skip without Chromium, or fail where a browser is required."""
    reason = browser_missing() if item.get_closest_marker("browser") is not None else None
    if reason and browser_required():
        pytest.fail(f"{reason}; {_REQUIRED}")
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """One headless Chromium per test process; every test gets its own context (``page``)."""
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser) -> Iterator[object]:
    """A fresh page (own cookies, own storage) at the README's screenshot size."""
    context = browser.new_context(
        viewport=VIEWPORT, extra_http_headers={"Authorization": f"Bearer {TEST_OPERATOR}"}
    )
    context.set_default_timeout(WAIT_MS)
    tab = context.new_page()
    yield tab
    context.close()


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
