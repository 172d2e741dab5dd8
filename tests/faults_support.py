"""What the fault tests share: a PostgreSQL server of their own, senders under load, processes.

The throwaway PostgreSQL runs from the distribution's binaries on a free port in a private
directory, so a test may stop and start it at will without touching any shared server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg

from tests.conftest import free_port


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


class PgCluster:
    """A PostgreSQL server that belongs to one test: ``initdb`` + ``pg_ctl`` on a free port."""

    def __init__(self) -> None:
        bin_dir = _pg_bin()
        if bin_dir is None:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql")
        self.bin = bin_dir
        self.port = free_port()
        # Not under pytest's tmp_path: that sits in a directory only its owner may enter, and
        # PostgreSQL refuses to run as root, so the server runs as the postgres user.
        self.root = Path(tempfile.mkdtemp(prefix="hookbin-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_user = self._user_prefix()
        if self._as_user:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ]
        )

    @staticmethod
    def _user_prefix() -> list[str]:
        if os.geteuid() != 0:
            return []
        return ["runuser", "-u", "postgres", "--"]

    def _run(self, argv: list[str]) -> None:
        subprocess.run(
            [*self._as_user, *argv],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=120,
        )

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``postgres`` database on this server."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
            "-c fsync=on -c max_connections=200"
        )
        self._run(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ]
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: sessions are cut; ``immediate``: as if it crashed)."""
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def running(self) -> bool:
        """True while the server accepts connections."""
        try:
            psycopg.connect(self.libpq(), connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def libpq(self) -> str:
        """The libpq connection string."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def close(self) -> None:
        """Stop the server if it runs and remove its files."""
        with contextlib.suppress(subprocess.SubprocessError):
            if self.running():
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants."""
    out = [root]
    try:
        children = Path(f"/proc/{root}/task/{root}/children").read_text().split()
    except OSError:
        return out
    for child in children:
        out += process_tree(int(child))
    return out


def worker_pids(master: int) -> list[int]:
    """The gunicorn workers of ``master`` (its direct children)."""
    try:
        return [int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split()]
    except OSError:
        return []


def kill_all(root: int) -> None:
    """SIGKILL ``root`` and every descendant, workers first taken while the master still lives."""
    for pid in process_tree(root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def wait_until(check: Callable[[], bool], timeout: float, message: str) -> None:
    """Poll ``check`` until it is true; fail with ``message`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.05)


class Senders:
    """Threads posting captures in a loop, remembering every request answered 200 and every
    other status (connection failures are simply not acknowledged)."""

    def __init__(self, capture_url: str, threads: int = 6, body: bytes = b"x" * 512) -> None:
        self.url = capture_url
        self.body = body
        self.acknowledged: list[str] = []
        self.statuses: dict[int, int] = {}
        self.bad: list[tuple[int, str, str]] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                try:
                    response = client.post(self.url, content=self.body)
                except httpx.HTTPError:
                    continue  # never acknowledged; try again on a new connection
                with self._lock:
                    status = response.status_code
                    self.statuses[status] = self.statuses.get(status, 0) + 1
                    if status == 200:
                        self.acknowledged.append(response.json()["request_id"])
                    elif status != 503 or response.headers.get("retry-after") is None:
                        self.bad.append(
                            (status, response.headers.get("content-type", ""), response.text[:200])
                        )
                    elif response.headers.get("content-type") != "application/json":
                        self.bad.append((status, response.headers["content-type"], response.text))

    def count(self, status: int) -> int:
        """How many answers had ``status`` so far."""
        with self._lock:
            return self.statuses.get(status, 0)

    def join(self) -> None:
        """Stop sending and wait for the threads."""
        self.stop.set()
        for t in self._threads:
            t.join(30)


def kill_a_worker_under_load(master: int, senders: Senders) -> None:
    """SIGKILL one gunicorn worker of ``master`` while ``senders`` send; wait until the master
    has replaced it and a further 200 captures were acknowledged."""
    killed = worker_pids(master)[0]
    os.kill(killed, signal.SIGKILL)
    wait_until(
        lambda: killed not in worker_pids(master) and len(worker_pids(master)) == 2,
        30,
        "the killed worker was not replaced",
    )
    after = len(senders.acknowledged)
    wait_until(lambda: len(senders.acknowledged) >= after + 200, 30, "no captures after")
