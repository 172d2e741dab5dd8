"""The live hub's fast read path returns exactly what the general listing returns.

``store.requests_after`` runs after every commit on the event loop, so it skips SQLAlchemy's row
machinery and converts values itself; these tests pin it to ``store.list_requests`` on a real
SQLite file and on PostgreSQL, for every kind of value a request row can hold.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core import clock
from app.storage import captures, store
from app.storage.db import make_engine
from app.storage.migrate import upgrade


def _captures(bin_id: str) -> list[captures.Capture]:
    hostile = '<script>alert("x")</script> \u00e9\u2603'
    return [
        captures.Capture(
            bin_id=bin_id,
            method=method,
            path=f"/p/{i}",
            query_string=f"n={i}&q={hostile}",
            headers=[("X-Dup", "a"), ("x-dup", "b"), ("X-Text", hostile)],
            header_source="wire" if i % 2 else "environ",
            content_type=None if i == 0 else "application/json",
            body=bytes(range(i * 10)),
            remote_addr=None if i == 1 else "127.0.0.1",
            received_at=clock.utcnow(),
            signature=None if i == 0 else {"provider": "github", "status": "valid", "reason": "ok"},
            signing_rev=None if i == 0 else i,
            delivery_id=None if i < 2 else "github:same",
            answer_status=None if i == 0 else 503,
            answer_rule=None if i < 3 else "fail-twice",
        )
        for i, method in enumerate(["POST", "GET", "PUT", "DELETE", "PATCH"])
    ]


def _check(url: str) -> None:
    engine = make_engine(url)
    try:
        bin_id = store.create_bin(engine)["id"]
        other = store.create_bin(engine)["id"]
        captures.insert_captures(engine, _captures(bin_id))
        captures.insert_captures(engine, _captures(other))
        listed = list(reversed(store.list_requests(engine, bin_id, limit=100)))
        assert len(listed) == 5
        fast = store.requests_after(engine, bin_id, 0)
        assert fast == listed
        assert fast[3]["duplicate_of"] == fast[2]["id"]
        # The cursor and the limit behave as documented.
        assert store.requests_after(engine, bin_id, listed[1]["seq"]) == listed[2:]
        assert store.requests_after(engine, bin_id, 0, limit=2) == listed[:2]
        assert store.requests_after(engine, bin_id, listed[-1]["seq"]) == []
    finally:
        engine.dispose()


def test_fast_reads_match_the_listing_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'reads.sqlite3'}"
    upgrade(url)
    _check(url)


@pytest.mark.postgres
def test_fast_reads_match_the_listing_on_postgres(postgres_url: str) -> None:
    _check(postgres_url)
