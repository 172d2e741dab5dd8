"""The resume position of ``hookbin listen``, kept in a small JSON file between runs."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from app.storage.ids import seq_from_id


class StateError(Exception):
    """The state file exists but cannot be used."""


def default_state_path(bin_id: str, environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/hookbin/listen-<bin>.json``, or under ``~/.local/state`` without it."""
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_STATE_HOME", "")
    root = (
        Path(xdg)
        if os.path.isabs(xdg)
        else Path(env.get("HOME") or Path.home()) / ".local" / "state"
    )
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", bin_id) or "_"
    return root / "hookbin" / f"listen-{safe}.json"


def load_state(path: Path, bin_id: str) -> str | None:
    """The saved cursor for ``bin_id``; None when there is no state file.

    Raises StateError when the file exists but is unreadable, malformed, or about another bin
    (sequence numbers are shared by all bins, so another bin's cursor would skip or repeat).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise StateError(f"{path} is not valid JSON") from None
    if not isinstance(data, dict):
        raise StateError(f"{path} is not a listen state file")
    if data.get("bin_id") != bin_id:
        raise StateError(f"{path} belongs to bin {data.get('bin_id')!r}, not {bin_id!r}")
    after = data.get("after")
    if not isinstance(after, str) or seq_from_id(after) is None:
        raise StateError(f"{path} holds no valid request id")
    return after.lower()


def save_state(path: Path, bin_id: str, server: str, after: str) -> None:
    """Write the cursor atomically: a temporary file in the same directory, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "bin_id": bin_id,
        "server": server,
        "after": after,
        "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
