"""PostgreSQL faults: the database goes away and comes back, processes are killed mid-load.

Each test runs its own PostgreSQL server (``faults_support.PgCluster``) so that it can stop it.
Rule under test: an outage answers 503 + Retry-After, never 500, and never 200 for something that
was not stored; once the database is back, the server recovers by itself.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from app.storage.migrate import upgrade
from tests.conftest import Server, start_server
from tests.faults_support import (
    PgCluster,
    Senders,
    kill_a_worker_under_load,
    kill_all,
    wait_until,
)
from tests.test_stream import Viewer

pytestmark = pytest.mark.postgres


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    """A migrated PostgreSQL server of this test's own."""
    pg = PgCluster()
    try:
        pg.start()
        upgrade(pg.url)
        yield pg
    finally:
        pg.close()


def _stored_ids(pg: PgCluster) -> set[str]:
    with psycopg.connect(pg.libpq()) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM requests")}


def _capture_ok(server: Server, bin_id: str) -> str | None:
    try:
        response = httpx.post(f"{server.url}/h/{bin_id}/after", content=b"back", timeout=10)
    except httpx.HTTPError:
        return None
    return response.json()["request_id"] if response.status_code == 200 else None


def test_an_outage_answers_503_with_retry_after_and_the_server_recovers_by_itself(
    cluster: PgCluster, tmp_path: Path
) -> None:
    # The live hub's safety-net poll is slowed to 30 s (conftest): live frames after the
    # outage must come from the LISTEN connection, not from the poll.
    srv = start_server(cluster.url, tmp_path, workers=2)
    viewer = None
    senders = None
    try:
        bin_ = srv.create_bin()
        viewer = Viewer(srv, bin_["id"])
        first = _capture_ok(srv, bin_["id"])
        assert first is not None
        assert [i["id"] for i in viewer.wait_for(1)] == [first]

        senders = Senders(bin_["capture_url"], threads=4)
        wait_until(lambda: len(senders.acknowledged) >= 50, 30, "no captures before the outage")
        cluster.stop("fast")
        before = senders.count(503)
        # Long enough for every worker's cached bin to expire: the bin lookup fails too.
        stopped = time.monotonic()
        # Past the bin cache's lifetime (2 s) the bin lookup itself meets the outage too.
        wait_until(
            lambda: time.monotonic() - stopped > 4 and senders.count(503) >= before + 200,
            60,
            "no 503s during the outage",
        )

        # The Flask side: JSON 503 with Retry-After, not an HTML 500 page.
        for path in (f"/api/bins/{bin_['id']}/requests", f"/bins/{bin_['id']}", "/api/bins"):
            method = "POST" if path == "/api/bins" else "GET"
            response = httpx.request(method, srv.url + path, timeout=30)
            assert response.status_code == 503, (path, response.status_code, response.text)
            assert response.headers["content-type"] == "application/json"
            assert response.headers["retry-after"]
            assert response.json()["error"]

        cluster.start()
        recovered = senders.count(200)
        wait_until(
            lambda: senders.count(200) >= recovered + 100, 60, "captures did not recover by itself"
        )
        senders.join()
        assert not senders.bad, f"answers other than 200 or 503 + Retry-After: {senders.bad[:5]}"
        assert senders.count(503) > 0

        # Live push works again: a new capture reaches the viewer that stayed connected.
        wait_until(
            lambda: len(viewer.items) >= len(set(senders.acknowledged)) + 1,
            30,
            "the viewer did not catch up after the outage",
        )
        last = _capture_ok(srv, bin_["id"])
        assert last is not None
        wait_until(
            lambda: any(i["id"] == last for i in viewer.items),
            10,
            "a capture after the outage was not pushed to the live viewer",
        )
        seen = [i["id"] for i in viewer.items]
        assert seen == sorted(seen) and len(seen) == len(set(seen)), "gaps or repeats"
        assert set(senders.acknowledged) <= set(seen)
    finally:
        if senders is not None:
            senders.join()
        if viewer is not None:
            viewer.close()
        srv.stop()

    missing = set(senders.acknowledged) - _stored_ids(cluster)
    assert not missing, f"{len(missing)} acknowledged captures are not stored"


@pytest.mark.parametrize("victim", ["one worker", "whole server"])
def test_kill_9_under_load_loses_no_acknowledged_capture(
    cluster: PgCluster, tmp_path: Path, victim: str
) -> None:
    srv = start_server(cluster.url, tmp_path, workers=2)
    senders = None
    try:
        bin_ = srv.create_bin()
        senders = Senders(bin_["capture_url"], threads=8)
        wait_until(lambda: len(senders.acknowledged) >= 300, 60, "no load")
        if victim == "one worker":
            # The master replaces it, and captures go on.
            kill_a_worker_under_load(srv.process.pid, senders)
        else:
            kill_all(srv.process.pid)
            srv.process.wait()
        senders.join()
    finally:
        if senders is not None:
            senders.join()
        srv.stop(signal.SIGKILL)
    missing = set(senders.acknowledged) - _stored_ids(cluster)
    assert not missing, f"{len(missing)} acknowledged captures lost ({victim})"
