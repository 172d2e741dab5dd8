"""A capture is answered only after its commit is flushed to disk (SQLite, synchronous=FULL).

Under FULL the capture writer commits with NORMAL and flushes the write-ahead log itself
(``app.storage.walsync``). A kill -9 cannot show a missing flush, since the kernel keeps a killed
process's writes; so this test watches the flush itself: every ``os.fdatasync`` is recorded with
the file its descriptor points at, next to the commit, the publication to live viewers and the
capture's answer, in the order they happen.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from app import create_app, wiring
from app.config import Settings
from app.storage.migrate import upgrade
from tests.conftest import TEST_OPERATOR


def test_the_log_is_fdatasynced_after_the_commit_and_before_the_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "wal.sqlite3"
    wal = os.path.realpath(f"{db}-wal")
    url = f"sqlite:///{db}"
    upgrade(url)
    settings = Settings(database_url=url, admin_token=TEST_OPERATOR)
    assert settings.sqlite_synchronous == "FULL"  # the default this test is about
    app = create_app(settings)
    services = app.extensions["hookbin"]
    events: list[tuple[str, Any]] = []

    real_fdatasync = os.fdatasync

    def fdatasync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        # What the flushed file holds at that moment: the commit's frames must be in it.
        size = os.fstat(fd).st_size
        content = os.pread(fd, size, 0)
        real_fdatasync(fd)
        events.append(("fdatasync", (path, content)))

    real_insert = wiring.insert_captures

    def insert_captures(*args: Any, **kwargs: Any) -> Any:
        results = real_insert(*args, **kwargs)
        events.append(("commit", None))
        return results

    real_deliver = services.hub.deliver_now

    def deliver_now(bin_ids: Any) -> None:
        events.append(("publish", None))
        real_deliver(bin_ids)

    real_wsgi = app.wsgi_app

    def answering(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            events.append(("answer", status))
            return start_response(status, headers, *exc_info)

        return real_wsgi(environ, start)

    app.wsgi_app = answering  # type: ignore[method-assign]
    try:
        client = app.test_client()
        bin_id = client.post("/api/bins").get_json()["id"]
        monkeypatch.setattr(os, "fdatasync", fdatasync)
        monkeypatch.setattr(wiring, "insert_captures", insert_captures)
        monkeypatch.setattr(services.hub, "deliver_now", deliver_now)
        events.clear()

        marker = secrets.token_hex(32).encode()
        response = client.post(f"/h/{bin_id}/hook", data=marker)
        assert response.status_code == 200
        assert client.get(f"/api/requests/{response.get_json()['request_id']}/body").data == marker

        capture = events[: [kind for kind, _ in events].index("answer") + 1]
        assert [kind for kind, _ in capture] == ["commit", "fdatasync", "publish", "answer"]
        path, content = capture[1][1]
        assert path == wal, f"flushed {path}, not the write-ahead log"
        assert marker in content, "the flushed log does not hold the commit"
        assert capture[3][1].startswith("200")
        assert services.batcher.syncs == 1
    finally:
        services.close()
