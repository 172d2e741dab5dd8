"""The directory where gunicorn's workers keep their metric values (``PROMETHEUS_MULTIPROC_DIR``).

Each server start gets a fresh private one: values left by an earlier run would be summed into
this run's figures. The master creates it before any worker starts, tells the library when a
worker is gone (so that its live viewers stop counting), and removes it when it exits.

The gunicorn master imports this module, so it imports prometheus_client only when a worker has
died: the library picks its storage when first imported, which must happen after the directory
is set, and a metric made in the master would leave a file of the master's own there.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
_PREFIX = "hookbin-metrics-"


def _ours(directory: Path) -> bool:
    return directory.name.startswith(_PREFIX) and directory.parent == Path(tempfile.gettempdir())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> None:
    """Remove directories left by servers of this user that died without cleaning up."""
    for directory in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*"):
        try:
            pid = int(directory.name[len(_PREFIX) :].split("-", 1)[0])
            mine = directory.stat().st_uid == os.getuid()
        except (ValueError, OSError):
            continue
        if mine and not _alive(pid):
            shutil.rmtree(directory, ignore_errors=True)


def fresh_dir() -> str:
    """Create a private directory for this server start and point ``ENV`` at it.

    Named after this process, which stays gunicorn's master (``hookbin serve`` execs it).
    """
    sweep_stale()
    directory = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-")  # mode 0700
    os.environ[ENV] = directory
    return directory


def ensure_dir() -> str:
    """The directory ``ENV`` names, made fresh when it names none (gunicorn run directly)."""
    current = os.environ.get(ENV)
    if current and Path(current).is_dir():
        return current
    return fresh_dir()


def mark_dead(pid: int) -> None:
    """A worker is gone: drop its live-gauge values (its counters still count)."""
    directory = os.environ.get(ENV)
    if directory and Path(directory).is_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, directory)


def remove_dir() -> None:
    """Remove this server's directory, if it made it (not one an operator chose)."""
    directory = os.environ.get(ENV)
    if directory and _ours(Path(directory)):
        shutil.rmtree(directory, ignore_errors=True)
