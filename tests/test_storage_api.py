"""``Storage``, the one interface to bins, requests and attempts, on every driver.

The same tests run on a real SQLite file and on PostgreSQL. They pin what callers rely on:
writes go through the serialised writer (off the event loop on SQLite), and a bin changed or
deleted through ``Storage`` is never served stale from this process's cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import Settings
from app.core import clock
from app.storage import captures, writes
from app.storage.db import make_engine
from app.storage.migrate import upgrade
from app.storage.repository import BinExists, Storage
from app.storage.writes import SerialWrites


@pytest.fixture(params=["sqlite", "postgres"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'hookbin.sqlite3'}"
        upgrade(url)
    else:
        url = request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    serial = SerialWrites(Settings(database_url=url), engine)
    # A long cache life, so a stale read would show in these tests.
    yield Storage(engine, serial, bin_ttl_seconds=600)
    serial.close()
    engine.dispose()


def _capture(bin_id: str, body: bytes = b"{}") -> captures.Capture:
    return captures.Capture(
        bin_id=bin_id,
        method="POST",
        path="/x",
        query_string="a=1",
        headers=[("Content-Type", "application/json")],
        header_source="environ",
        content_type="application/json",
        body=body,
        remote_addr="127.0.0.1",
        received_at=clock.utcnow(),
    )


def _insert(storage: Storage, bin_id: str, body: bytes = b"{}") -> dict:
    (stored,) = storage.write(captures.insert_captures, [_capture(bin_id, body)])
    assert stored is not None
    item = storage.get_request(stored.id)
    assert item is not None
    return item


def test_bins_are_created_read_and_named(storage: Storage) -> None:
    made = storage.create_bin()
    assert storage.get_bin(made["id"]) == made
    named = storage.create_bin("team-stripe")
    assert named["id"] == "team-stripe"
    with pytest.raises(BinExists):
        storage.create_bin("team-stripe")
    assert storage.get_bin("no-such-bin") is None


def test_a_changed_bin_is_never_served_stale_from_the_cache(storage: Storage) -> None:
    bin_id = storage.create_bin()["id"]
    assert storage.cached_bin(bin_id)["forward_url"] is None  # now cached for ten minutes
    storage.update_bin(bin_id, forward_url="http://127.0.0.1:9/hook", auto_forward=True)
    cached = storage.cached_bin(bin_id)
    assert (cached["forward_url"], cached["auto_forward"]) == ("http://127.0.0.1:9/hook", True)
    assert storage.delete_bin(bin_id) is True
    assert storage.cached_bin(bin_id) is None
    assert storage.delete_bin(bin_id) is False


def test_signing_changes_move_the_revision_on(storage: Storage) -> None:
    bin_ = storage.create_bin()
    updated = storage.update_bin(bin_["id"], signing={"provider": "github", "secrets": ["s"]})
    assert updated["signing_rev"] == bin_["signing_rev"] + 1
    assert storage.update_bin(bin_["id"], forward_url=None)["signing_rev"] == updated["signing_rev"]


def test_requests_bodies_and_attempts(storage: Storage) -> None:
    bin_id = storage.create_bin()["id"]
    first = _insert(storage, bin_id, b"\x00\xffbinary")
    second = _insert(storage, bin_id)
    assert storage.get_body(first["seq"]) == b"\x00\xffbinary"
    assert [i["id"] for i in storage.list_requests(bin_id, limit=10)] == [second["id"], first["id"]]
    assert storage.list_requests(bin_id, limit=10, before_seq=second["seq"]) == [first]
    assert storage.requests_after(bin_id, first["seq"]) == [second]
    assert storage.count_requests(bin_id) == 2
    assert storage.last_seq(bin_id) == second["seq"]
    assert storage.high_water() >= second["seq"]
    assert storage.bins_changed_since(first["seq"]) == {bin_id: second["seq"]}

    attempt = storage.add_attempt(
        first["seq"],
        "replay",
        method="POST",
        url="http://127.0.0.1:9/",
        started_at=clock.utcnow(),
        status=204,
        response_headers=[("X-A", "1")],
        response_body=b"",
        response_size=0,
        truncated=False,
        elapsed_ms=1.25,
        error=None,
    )
    assert storage.list_attempts(first["seq"]) == [attempt]
    assert storage.get_attempt(first["seq"], attempt["id"]) == attempt
    assert storage.get_attempt(second["seq"], attempt["id"]) is None

    verdict = {"provider": "github", "status": "valid", "reason": "ok"}
    storage.save_verdict(first["seq"], verdict, 7)
    again = storage.get_request(first["id"])
    assert (again["signature"], again["signing_rev"]) == (verdict, 7)

    assert storage.delete_request(first["id"]) is True
    assert storage.get_request(first["id"]) is None
    assert storage.list_attempts(first["seq"]) == []
    assert storage.delete_request(first["id"]) is False
    assert storage.clear_bin(bin_id) == 1
    assert storage.count_requests(bin_id) == 0


def test_every_write_goes_through_the_serialised_writer(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite each write leaves the event loop (``run_blocking``); reads never do."""
    calls: list[str] = []
    real = writes.run_blocking

    def counting(fn, *args, **kwargs):  # noqa: ANN001, ANN202
        calls.append("write")
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(writes, "run_blocking", counting)
    sqlite = storage.read(lambda engine: engine.dialect.name) == "sqlite"

    bin_id = storage.create_bin()["id"]
    item = _insert(storage, bin_id)
    storage.update_bin(bin_id, forward_url="http://127.0.0.1:9/")
    storage.save_verdict(item["seq"], {"provider": None, "status": "unchecked"}, 1)
    storage.add_attempt(
        item["seq"],
        "replay",
        method="GET",
        url="http://127.0.0.1:9/",
        started_at=clock.utcnow(),
        status=None,
        response_headers=[],
        response_body=b"",
        response_size=0,
        truncated=False,
        elapsed_ms=0.0,
        error="refused",
    )
    storage.delete_request(item["id"])
    storage.clear_bin(bin_id)
    storage.delete_bin(bin_id)
    writes_made = len(calls)

    storage.get_bin(bin_id)
    storage.list_requests(bin_id, limit=5)
    storage.count_requests(bin_id)
    storage.ping()
    assert len(calls) == writes_made  # reads stay where they are
    # create, insert, update, verdict, attempt, delete request, clear, delete bin.
    assert writes_made == (8 if sqlite else 0)


def test_share_links_and_the_deployment_secret(storage: Storage) -> None:
    bin_id = storage.create_bin(token_hash="d" * 64, page_key_salt="salt")["id"]
    made = storage.get_bin(bin_id)
    assert (made["token_hash"], made["page_key_salt"]) == ("d" * 64, "salt")
    first = storage.add_share(bin_id, "s1", "h1" * 32, "for the team")
    storage.add_share(bin_id, "s2", "h2" * 32, None)
    assert [s["id"] for s in storage.list_shares(bin_id)] in (["s2", "s1"], ["s1", "s2"])
    assert storage.live_share("h1" * 32) == first
    assert storage.share_alive(bin_id, "s1")
    assert storage.revoke_share(bin_id, "s1") is True
    assert storage.revoke_share(bin_id, "s1") is False
    assert storage.live_share("h1" * 32) is None
    assert not storage.share_alive(bin_id, "s1")
    assert not storage.share_alive("other-bin", "s2")
    secret = storage.instance_secret("cookie_key")
    assert secret and len(secret) >= 32
    storage.delete_bin(bin_id)
    assert storage.list_shares(bin_id) == []
