"""PostgreSQL: the team deployment. Several instances, several workers, one database.

Skipped, with the reason, when no PostgreSQL answers at HOOKBIN_TEST_POSTGRES_URL.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import PUSH_ONLY, Server, new_postgres_database, start_server
from tests.test_stream import Viewer, subscribed

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def instances(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """Two instances with two workers each on one database; each test makes its own bins.

    Push only: a capture that reaches a viewer on the other instance in time came by NOTIFY.
    """
    tmp = tmp_path_factory.mktemp("postgres")
    with new_postgres_database() as url:
        a = start_server(url, tmp, workers=2, extra_env=PUSH_ONLY)
        try:
            b = start_server(url, tmp, workers=2, extra_env=PUSH_ONLY)
            try:
                yield a, b
            finally:
                b.stop()
        finally:
            a.stop()


def test_capture_store_and_read_back_on_postgres(instances: tuple[Server, Server]) -> None:
    srv, _ = instances
    bin_ = srv.create_bin()
    body = bytes(range(256))
    response = httpx.post(
        f"{bin_['capture_url']}/pg?x=1", content=body, headers=[("X-Dup", "a"), ("X-Dup", "b")]
    )
    assert response.status_code == 200
    [item] = httpx.get(f"{srv.url}/api/bins/{bin_['id']}/requests").json()["items"]
    assert item["path"] == "/pg" and item["query_string"] == "x=1"
    assert [v for n, v in item["headers"] if n == "X-Dup"] == ["a", "b"]
    assert httpx.get(f"{srv.url}/api/requests/{item['id']}/body").content == body


def test_two_instances_with_two_workers_each_share_live_updates(
    instances: tuple[Server, Server],
) -> None:
    a, b = instances
    bin_ = a.create_bin()
    viewers = [Viewer(a, bin_["id"]) for _ in range(3)] + [Viewer(b, bin_["id"]) for _ in range(3)]
    subscribed(a, bin_["id"], viewers)
    # Concurrent captures through both instances: sequence order must equal commit order, so
    # every viewer sees the same list, in id order, with nothing missing.
    ids: list[str] = []
    lock = threading.Lock()

    def send(server, n):
        with httpx.Client(timeout=10) as client:
            for i in range(n):
                rid = client.post(f"{server.url}/h/{bin_['id']}/{i}").json()["request_id"]
                with lock:
                    ids.append(rid)

    threads = [threading.Thread(target=send, args=(s, 25)) for s in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = sorted(ids)
    for viewer in viewers:
        got = [i["id"] for i in viewer.wait_for(len(expected))]
        assert got == expected
    for viewer in viewers:
        viewer.close()


def test_resume_after_cursor_on_postgres(instances: tuple[Server, Server]) -> None:
    _, srv = instances
    bin_ = srv.create_bin()
    ids = [httpx.post(bin_["capture_url"]).json()["request_id"] for _ in range(5)]
    viewer = Viewer(srv, bin_["id"], after=ids[2])
    try:
        assert [i["id"] for i in viewer.wait_for(2)] == ids[3:]
    finally:
        viewer.close()
