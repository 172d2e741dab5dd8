"""Migrations create exactly the schema the code uses, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app.storage.db import make_engine, metadata
from app.storage.migrate import downgrade, upgrade
from tests.conftest import ROOT


def _diff(url: str) -> list:
    engine = make_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    return diff


def test_sqlite_schema_matches_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    upgrade(url)
    upgrade(url)  # idempotent
    assert _diff(url) == []


@pytest.mark.postgres
def test_postgres_schema_matches_models(postgres_url: str) -> None:
    assert _diff(postgres_url) == []


def test_migrate_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"],
        cwd=ROOT,
        env={"HOOKBIN_DATABASE_URL": url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
    assert _diff(url) == []


# --- revision 0004: the request tables are rebuilt without losing a row ------------------------


def _fill_at_0003(url: str) -> None:
    """Two bins, three requests with bodies, an attempt and a forward entry, as 0003 stored them."""
    engine = make_engine(url)
    now = "2026-12-01 10:00:00.000000"
    with engine.begin() as conn:
        for bin_id in ("bin-a", "bin-b"):
            conn.execute(
                sa.text("INSERT INTO bins (id, created_at) VALUES (:id, :now)"),
                {"id": bin_id, "now": now},
            )
        rows = ((1, "bin-a", "github:1"), (2, "bin-a", None), (3, "bin-b", None))
        for seq, bin_id, delivery in rows:
            conn.execute(
                sa.text(
                    "INSERT INTO requests (seq, id, bin_id, method, path, query_string, headers,"
                    " header_source, body_size, received_at, delivery_id)"
                    " VALUES (:seq, :id, :bin, 'POST', '/', '', '[]', 'wire', 3, :now, :d)"
                ),
                {"seq": seq, "id": f"{seq:012x}r", "bin": bin_id, "now": now, "d": delivery},
            )
            conn.execute(
                sa.text("INSERT INTO request_bodies (request_seq, data) VALUES (:seq, :data)"),
                {"seq": seq, "data": bytes([seq, 0, 255])},
            )
        conn.execute(
            sa.text(
                "INSERT INTO attempts (request_seq, kind, method, url, started_at,"
                " response_headers, response_body, response_size, truncated, elapsed_ms)"
                " VALUES (1, 'replay', 'POST', 'http://t', :now, '[]', :b, 0, false, 1.0)"
            ),
            {"now": now, "b": b""},
        )
        conn.execute(
            sa.text(
                "INSERT INTO forward_queue (request_seq, bin_id, url, state, tries, next_at,"
                " created_at) VALUES (2, 'bin-a', 'http://t', 'pending', 0, :now, :now)"
            ),
            {"now": now},
        )
        conn.execute(sa.text("UPDATE counters SET value = 3 WHERE name = 'requests'"))
    engine.dispose()


def _contents(url: str) -> dict[str, list]:
    engine = make_engine(url)
    with engine.connect() as conn:
        out = {
            "requests": conn.execute(
                sa.text("SELECT seq, id, bin_id, delivery_id FROM requests ORDER BY seq")
            ).all(),
            "bodies": conn.execute(
                sa.text("SELECT request_seq, data FROM request_bodies ORDER BY request_seq")
            ).all(),
            "attempts": conn.execute(sa.text("SELECT request_seq, kind FROM attempts")).all(),
            "queue": conn.execute(sa.text("SELECT request_seq, state FROM forward_queue")).all(),
        }
    engine.dispose()
    return {k: [tuple(r) for r in v] for k, v in out.items()}


_EXPECTED = {
    "requests": [
        (1, "000000000001r", "bin-a", "github:1"),
        (2, "000000000002r", "bin-a", None),
        (3, "000000000003r", "bin-b", None),
    ],
    "bodies": [(1, b"\x01\x00\xff"), (2, b"\x02\x00\xff"), (3, b"\x03\x00\xff")],
    "attempts": [(1, "replay")],
    "queue": [(2, "pending")],
}


def _cascade_still_works(url: str) -> None:
    """Deleting a bin still takes its requests, bodies, attempts and queue entries with it."""
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM bins WHERE id = 'bin-a'"))
    engine.dispose()
    left = _contents(url)
    assert left["requests"] == [(3, "000000000003r", "bin-b", None)]
    assert left["bodies"] == [(3, b"\x03\x00\xff")]
    assert left["attempts"] == [] and left["queue"] == []


def test_sqlite_0004_rebuilds_the_request_tables_keeping_every_row(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    upgrade(url, "0003")
    _fill_at_0003(url)
    upgrade(url)
    assert _contents(url) == _EXPECTED
    assert _diff(url) == []
    db = sqlite3.connect(tmp_path / "old.sqlite3")
    try:
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        # The sequence is the row id now: no separate primary-key index, none on the public id.
        assert not {i for i in indexes if i.startswith("sqlite_autoindex_request")}
        assert {"ix_requests_bin_seq", "ix_requests_bin_delivery"} <= indexes
        plan = " ".join(
            str(r)
            for r in db.execute(
                "EXPLAIN QUERY PLAN SELECT bin_id, delivery_id, MIN(seq) FROM requests"
                " WHERE bin_id IN ('bin-a') AND delivery_id IN ('github:1')"
                " GROUP BY bin_id, delivery_id"
            )
        )
        assert "SEARCH requests USING COVERING INDEX ix_requests_bin_delivery" in plan
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        db.close()
    # And back: the old tables return with the same rows.
    downgrade(url, "0003")
    assert _contents(url) == _EXPECTED
    upgrade(url)
    _cascade_still_works(url)


@pytest.mark.postgres
def test_postgres_0004_keeps_every_row(postgres_url: str) -> None:
    downgrade(postgres_url, "0003")
    _fill_at_0003(postgres_url)
    upgrade(postgres_url)
    assert _contents(postgres_url) == _EXPECTED
    assert _diff(postgres_url) == []
    _cascade_still_works(postgres_url)
