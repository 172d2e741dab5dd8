"""``/metrics`` of a real ``hookbin serve`` with two gevent workers: figures summed over both.

Each worker writes its values into the server's private metrics directory; the tests read
those files too, to be sure that both workers really took part, and then check that one scrape
(answered by either worker) adds them up exactly.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import websocket
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Server, free_port, start_server


def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape: (name, sorted labels) -> value."""
    response = httpx.get(f"{server.url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def sample(server: Server, name: str, **labels: str) -> float | None:
    return scrape(server).get((name, tuple(sorted(labels.items()))))


def poll(read: Callable[[], object], expected: object, timeout: float = 20.0) -> None:
    """Wait until ``read()`` gives ``expected``."""
    deadline = time.monotonic() + timeout
    while True:
        got = read()
        if got == expected:
            return
        assert time.monotonic() < deadline, f"still {got!r}, expected {expected!r}"
        time.sleep(0.05)


def metrics_dir(server: Server) -> Path:
    """The directory ``hookbin serve`` made for this start (gunicorn's master is its process)."""
    environ = Path(f"/proc/{server.process.pid}/environ").read_bytes().split(b"\0")
    [entry] = [e for e in environ if e.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]
    return Path(entry.split(b"=", 1)[1].decode())


def per_worker(directory: Path, kind: str, name: str) -> dict[int, float]:
    """``name``'s value in each worker's file of ``kind`` (counter, gauge_livesum, ...)."""
    values: dict[int, float] = {}
    for path in directory.glob(f"{kind}_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(str(path)):
            if json.loads(key)[1] == name:
                values[pid] = values.get(pid, 0.0) + value
    return values


@pytest.fixture
def two_workers(tmp_path: Path, sqlite_url: str) -> Iterator[Server]:
    srv = start_server(
        sqlite_url,
        tmp_path,
        workers=2,
        extra_env={"HOOKBIN_MAX_BODY_BYTES": "1024", "HOOKBIN_FORWARD_RETRY_SCHEDULE": "60"},
    )
    yield srv
    directory = metrics_dir(srv)
    srv.stop()
    assert not directory.exists(), "the metrics directory outlived its server"


def test_capture_figures_add_up_over_both_workers(two_workers: Server) -> None:
    server = two_workers
    bin_id = server.create_bin()["id"]

    def post(i: int) -> int:
        # A new connection each time, so that both workers get captures.
        with httpx.Client(timeout=30) as client:
            if i % 10 == 7:
                return client.post(f"{server.url}/h/no-such-bin-{i}/x", content=b"x").status_code
            if i % 10 == 9:
                return client.post(f"{server.url}/h/{bin_id}/big", content=b"x" * 2048).status_code
            return client.post(f"{server.url}/h/{bin_id}/n{i}", content=b"%d" % i).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(post, range(60)))
    assert statuses.count(200) == 48 and statuses.count(404) == 6 and statuses.count(413) == 6

    served = per_worker(metrics_dir(server), "counter", "hookbin_captures_total")
    assert len(served) == 2 and all(v > 0 for v in served.values()), served
    assert sum(served.values()) == 60

    figures = scrape(server)
    assert figures[("hookbin_captures_total", (("status", "200"),))] == 48
    assert figures[("hookbin_captures_total", (("status", "404"),))] == 6
    assert figures[("hookbin_captures_total", (("status", "413"),))] == 6
    assert figures[("hookbin_capture_duration_seconds_count", ())] == 60
    assert figures[("hookbin_capture_duration_seconds_sum", ())] > 0
    # Every stored capture was in exactly one group commit.
    assert figures[("hookbin_commit_batch_size_sum", ())] == 48
    assert 1 <= figures[("hookbin_commit_batch_size_count", ())] <= 48
    assert figures[("hookbin_forward_queue_depth", ())] == 0
    assert figures[("hookbin_purged_requests_total", ())] == 0


def _viewer(server: Server, bin_id: str) -> websocket.WebSocket:
    return websocket.create_connection(f"{server.ws_url}/api/bins/{bin_id}/stream", timeout=10)


def test_live_viewers_are_summed_and_a_killed_worker_stops_counting(two_workers: Server) -> None:
    server = two_workers
    bin_id = server.create_bin()["id"]
    directory = metrics_dir(server)

    def viewers_per_worker() -> dict[int, float]:
        return per_worker(directory, "gauge_livesum", "hookbin_live_viewers")

    sockets = [_viewer(server, bin_id)]
    try:
        # New connections until both workers hold viewers (the kernel picks the worker).
        deadline = time.monotonic() + 30
        while len([v for v in viewers_per_worker().values() if v > 0]) < 2:
            assert time.monotonic() < deadline, viewers_per_worker()
            sockets.append(_viewer(server, bin_id))
            time.sleep(0.05)
        while len(sockets) < 6:
            sockets.append(_viewer(server, bin_id))
        poll(lambda: sample(server, "hookbin_live_viewers"), 6.0)

        for ws in sockets[:2]:
            ws.close()
        poll(lambda: sample(server, "hookbin_live_viewers"), 4.0)

        # A worker killed outright never runs its own exit hook: the master's must drop it.
        held = {pid: v for pid, v in viewers_per_worker().items() if v > 0}
        victim = max(held, key=lambda pid: held[pid])
        survivors = sum(v for pid, v in held.items() if pid != victim)
        os.kill(victim, signal.SIGKILL)
        poll(lambda: sample(server, "hookbin_live_viewers"), survivors)
        # The replacement worker has loaded the app (and so handles signals) before the stop.
        poll(lambda: bool(set(viewers_per_worker()) - set(held)), True)
    finally:
        for ws in sockets:
            ws.close()


def test_forward_queue_depth_and_attempts_with_a_dead_target(two_workers: Server) -> None:
    server = two_workers
    bin_ = server.create_bin()
    dead = f"http://127.0.0.1:{free_port()}/hook"
    response = httpx.patch(
        f"{server.url}/api/bins/{bin_['id']}",
        json={"forward_url": dead, "auto_forward": True},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    for i in range(3):
        assert httpx.post(f"{server.url}/h/{bin_['id']}/f{i}", content=b"f").status_code == 200

    # The first request is tried and fails; it waits 60 s for its retry and the other two
    # wait behind it, so all three stay pending.
    poll(lambda: sample(server, "hookbin_forward_attempts_total", outcome="failed"), 1.0)
    assert sample(server, "hookbin_forward_queue_depth") == 3
    assert sample(server, "hookbin_forward_attempts_total", outcome="delivered") is None
