"""Auto-forward over HTTP: retries with backoff, capture order, restarts, retry now.

Each test runs Hookbin and a local target that can be told to fail its first N requests, or be
absent altogether. Schedules are short ("0.2,0.4"), and no assertion depends on timing: only on
what arrived, how often and in which order. What one process's delivery loop does is tested on
the app served from a thread of the test process (``thread_server``); restarts, several workers
and several instances on real ``hookbin serve`` processes (gunicorn, gevent workers).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from app.delivery import queue as forwardqueue
from app.storage.db import make_engine
from app.storage.ids import seq_from_id
from tests.conftest import (
    Listening,
    Server,
    ThreadServer,
    free_port,
    start_server,
    wait_until,
)


@dataclass
class Target:
    """A forward target that answers 503 to its first ``fail_first`` requests, then 200."""

    fail_first: int = 0
    port: int = 0
    received: list[str] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Target:
        target = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                with target._lock:
                    target.received.append(self.path)
                    failing = len(target.received) <= target.fail_first
                status = 503 if failing else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"no" if failing else b"ok")

            def log_message(self, *_args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def wait_for(self, count: int, timeout: float = 20.0) -> list[str]:
        wait_until(lambda: len(self.received) >= count, timeout, f"{count} requests at target")
        return list(self.received)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def targets() -> Iterator[Callable[..., Target]]:
    made: list[Target] = []

    def make(**kwargs) -> Target:
        target = Target(**kwargs).start()
        made.append(target)
        return target

    yield make
    for target in made:
        target.close()


def forwarding_env(schedule: str, **extra: str) -> dict[str, str]:
    return {
        "HOOKBIN_FORWARD_RETRY_SCHEDULE": schedule,
        "HOOKBIN_FORWARD_POLL_SECONDS": "0.2",
        "HOOKBIN_REPLAY_TIMEOUT_SECONDS": "2",
        **extra,
    }


def forwarding_settings(schedule: str, **extra: object) -> dict[str, object]:
    """``forwarding_env`` as ``Settings`` fields, for an app in this process."""
    return {
        "forward_retry_schedule": schedule,
        "forward_poll_seconds": 0.2,
        "replay_timeout_seconds": 2.0,
        **extra,
    }


def forwarding_bin(server: Listening, url: str) -> dict:
    bin_ = server.create_bin()
    response = httpx.patch(
        f"{server.url}/api/bins/{bin_['id']}", json={"forward_url": url, "auto_forward": True}
    )
    assert response.status_code == 200, response.text
    return bin_


def capture(bin_: dict, sub: str) -> str:
    response = httpx.post(bin_["capture_url"] + sub, content=sub.encode(), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["request_id"]


def forward_state(server: Listening, rid: str) -> dict:
    response = httpx.get(f"{server.url}/api/requests/{rid}/forward", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def wait_settled(
    server: Listening, rid: str, state: str = "delivered", timeout: float = 20
) -> dict:
    wait_until(lambda: forward_state(server, rid)["state"] == state, timeout, f"{rid} {state}")
    return forward_state(server, rid)


def forward_attempts(server: Listening, rid: str) -> list[dict]:
    """The forward attempts of a request, oldest first."""
    items = httpx.get(f"{server.url}/api/requests/{rid}/attempts", timeout=10).json()["items"]
    return [a for a in reversed(items) if a["kind"] == "forward"]


def test_failed_tries_are_retried_with_backoff_until_delivered(
    thread_server: Callable[..., ThreadServer], targets
) -> None:
    target = targets(fail_first=2)
    srv = thread_server(**forwarding_settings("0.2,0.4,0.8"))
    bin_ = forwarding_bin(srv, target.url)
    rid = capture(bin_, "/hook")
    state = wait_settled(srv, rid)
    assert state["tries"] == 3 and state["summary"] == "delivered on try 3"
    assert state["last_error"] is None and state["next_at"] is None
    assert state["max_tries"] == 4
    attempts = forward_attempts(srv, rid)
    assert [a["try_no"] for a in attempts] == [1, 2, 3]
    assert [a["status"] for a in attempts] == [503, 503, 200]
    assert [a["started_at"] for a in attempts] == sorted(a["started_at"] for a in attempts)
    assert target.received == ["/hook"] * 3


def test_a_failing_head_keeps_the_bin_in_capture_order(
    thread_server: Callable[..., ThreadServer], targets
) -> None:
    target = targets(fail_first=2)
    healthy = targets()
    srv = thread_server(**forwarding_settings("0.2,0.4"))
    bin_ = forwarding_bin(srv, target.url)
    other = forwarding_bin(srv, healthy.url)
    ids = [capture(bin_, f"/r{i}") for i in range(4)]
    other_id = capture(other, "/other")
    for rid in ids:
        wait_settled(srv, rid)
    # The head was tried three times; nothing behind it went before it was through.
    assert target.received == ["/r0", "/r0", "/r0", "/r1", "/r2", "/r3"]
    assert [len(forward_attempts(srv, rid)) for rid in ids] == [3, 1, 1, 1]
    assert wait_settled(srv, other_id)["tries"] == 1
    assert healthy.received == ["/other"]


def test_bins_do_not_wait_for_each_other(
    thread_server: Callable[..., ThreadServer], targets
) -> None:
    healthy = targets()
    srv = thread_server(**forwarding_settings("60"))
    stuck = forwarding_bin(srv, f"http://127.0.0.1:{free_port()}")  # nobody listens there
    fine = forwarding_bin(srv, healthy.url)
    stuck_ids = [capture(stuck, "/s0"), capture(stuck, "/s1")]
    fine_id = capture(fine, "/f0")
    assert wait_settled(srv, fine_id)["summary"] == "delivered on try 1"
    wait_until(lambda: forward_state(srv, stuck_ids[0])["tries"] == 1, 10, "first try")
    head = forward_state(srv, stuck_ids[0])
    assert head["state"] == "pending" and "refused" in head["last_error"]
    assert head["summary"].startswith("pending — try 2 in ")
    behind = forward_state(srv, stuck_ids[1])
    assert behind["tries"] == 0 and behind["waiting_behind"] == stuck_ids[0]


def test_a_refused_target_is_given_up_on_at_once(
    thread_server: Callable[..., ThreadServer], targets
) -> None:
    target = targets()
    srv = thread_server(**forwarding_settings("0.2,0.4", allow_private_targets=False))
    bin_ = forwarding_bin(srv, target.url)
    ids = [capture(bin_, "/a"), capture(bin_, "/b")]
    for rid in ids:  # the second is not held up by the first
        state = wait_settled(srv, rid, "failed")
        assert state["tries"] == 1 and state["last_error"].startswith("refused: ")
        [attempt] = forward_attempts(srv, rid)
        assert attempt["try_no"] == 1 and attempt["error"] == state["last_error"]
    assert target.received == []


def test_pending_forwards_survive_a_restart_and_arrive_once_in_order(
    tmp_path: Path, sqlite_url: str, targets
) -> None:
    port = free_port()  # the target is down while the first server runs
    env = forwarding_env(",".join(["0.3"] * 60))
    first = start_server(sqlite_url, tmp_path, extra_env=env)
    try:
        bin_ = forwarding_bin(first, f"http://127.0.0.1:{port}/in")
        ids = [capture(bin_, f"/r{i}") for i in range(5)]
        wait_until(lambda: forward_state(first, ids[0])["tries"] >= 2, 10, "a retry")
    finally:
        first.stop()
    engine = make_engine(sqlite_url)
    try:
        states = [forwardqueue.state_of(engine, seq_from_id(rid) or 0) or {} for rid in ids]
    finally:
        engine.dispose()
    assert [s["state"] for s in states] == ["pending"] * 5
    assert not any(s["in_flight"] for s in states)

    target = targets(port=port)
    second = start_server(sqlite_url, tmp_path, extra_env=env)
    try:
        for rid in ids:
            wait_settled(second, rid)
        # The bin's entries go out in capture order: once a last one is through, a second
        # delivery of any before it would have been made.
        last = capture({"capture_url": f"{second.url}/h/{bin_['id']}"}, "/last")
        wait_settled(second, last)
        assert target.received == [f"/in/r{i}" for i in range(5)] + ["/in/last"]
        assert [a["status"] for a in forward_attempts(second, ids[0])][-1] == 200
    finally:
        second.close()


def test_retry_now(thread_server: Callable[..., ThreadServer], targets) -> None:
    target = targets(fail_first=2)
    srv = thread_server(**forwarding_settings("0.1"))
    bin_ = forwarding_bin(srv, target.url)
    rid = capture(bin_, "/x")
    failed = wait_settled(srv, rid, "failed")
    assert failed["summary"] == "gave up after 2 tries: the target answered 503"

    page = httpx.get(f"{srv.url}/bins/{bin_['id']}/requests/{rid}").text
    assert 'id="forward-state"' in page and "gave up after 2 tries" in page
    assert 'id="forward-retry"' in page

    retried = httpx.post(f"{srv.url}/api/requests/{rid}/forward/retry")
    assert retried.status_code == 202, retried.text
    assert retried.json()["state"] in ("pending", "delivered")
    delivered = wait_settled(srv, rid)
    assert delivered["summary"] == "delivered on try 1"
    # The first round stays in the attempts; the new round counts from 1 again.
    attempts = forward_attempts(srv, rid)
    assert [(a["try_no"], a["status"]) for a in attempts] == [(1, 503), (2, 503), (1, 200)]
    assert target.received == ["/x"] * 3

    again = httpx.post(f"{srv.url}/api/requests/{rid}/forward/retry")
    assert again.status_code == 409 and "replay" in again.json()["error"]
    page = httpx.get(f"{srv.url}/bins/{bin_['id']}/requests/{rid}/forward").text
    assert "delivered on try 1" in page and 'id="forward-retry"' not in page

    plain = srv.create_bin()
    plain_id = capture(plain, "/p")
    assert httpx.get(f"{srv.url}/api/requests/{plain_id}/forward").status_code == 404
    assert httpx.post(f"{srv.url}/api/requests/{plain_id}/forward/retry").status_code == 404
    missing = "0" * 32
    assert httpx.get(f"{srv.url}/api/requests/{missing}/forward").status_code == 404


def test_retry_now_from_the_page_and_hostile_text_is_escaped(
    thread_server: Callable[..., ThreadServer],
) -> None:
    srv = thread_server(**forwarding_settings(""))
    hostile = f'http://127.0.0.1:{free_port()}/?q="><script>alert(1)</script>'
    bin_ = forwarding_bin(srv, hostile)
    rid = capture(bin_, "/x")
    assert wait_settled(srv, rid, "failed")["tries"] == 1
    fragment = httpx.post(
        f"{srv.url}/bins/{bin_['id']}/requests/{rid}/forward/retry",
        headers={"HX-Request": "true"},
    )
    assert fragment.status_code == 200
    assert "<script>alert(1)" not in fragment.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in fragment.text
    assert 'data-state="pending"' in fragment.text or 'data-state="failed"' in fragment.text
    # The re-opened entry gets its new try and, the target still being down, fails again.
    wait_until(lambda: len(forward_attempts(srv, rid)) == 2, 10, "the second try")
    assert wait_settled(srv, rid, "failed")["tries"] == 1


def _deliver_once_each(servers: list[Server], target: Target) -> None:
    """Captures spread over ``servers``: every one reaches the target once, bins in order."""
    bins = [servers[0].create_bin() for _ in range(3)]
    for bin_ in bins:  # each bin forwards below a path of its own: /<bin id>/<sub-path>
        url = f"{servers[0].url}/api/bins/{bin_['id']}"
        forward = {"forward_url": f"{target.url}/{bin_['id']}", "auto_forward": True}
        assert httpx.patch(url, json=forward).status_code == 200
    sent: list[tuple[str, str, str]] = []  # (bin id, path, request id)
    lock = threading.Lock()

    def send(worker: int) -> None:
        with httpx.Client(timeout=10) as client:
            for i in range(12):
                bin_ = bins[(worker + i) % len(bins)]
                server = servers[(worker + i) % len(servers)]
                path = f"/{bin_['id']}/w{worker}-{i}"
                response = client.post(f"{server.url}/h{path}")
                assert response.status_code == 200
                with lock:
                    sent.append((bin_["id"], path, response.json()["request_id"]))

    threads = [threading.Thread(target=send, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    target.wait_for(len(sent), timeout=60)
    # Each bin's entries go out in capture order: once a last one per bin is through, a second
    # delivery of any before it would have been made.
    last = [f"/{bin_['id']}/last" for bin_ in bins]
    for path in last:
        assert httpx.post(f"{servers[-1].url}/h{path}", timeout=10).status_code == 200
    wait_until(lambda: set(last) <= set(target.received), 60, "the last request of each bin")
    received = [p for p in target.received if p not in last]
    assert sorted(received) == sorted(path for _, path, _ in sent)  # each exactly once
    for bin_ in bins:
        # Request ids sort in capture order; the target saw each bin's requests in that order.
        mine = sorted((rid, path) for b, path, rid in sent if b == bin_["id"])
        assert [p for p in target.received if p.startswith(f"/{bin_['id']}/")] == [
            *(path for _, path in mine),
            f"/{bin_['id']}/last",
        ]
    for _, _, rid in sent[:6]:
        assert len(forward_attempts(servers[0], rid)) == 1


def test_two_workers_deliver_each_entry_once(tmp_path: Path, sqlite_url: str, targets) -> None:
    target = targets()
    srv = start_server(sqlite_url, tmp_path, workers=2, extra_env=forwarding_env("0.2"))
    try:
        _deliver_once_each([srv], target)
    finally:
        srv.close()


@pytest.mark.postgres
def test_two_instances_on_postgres_deliver_each_entry_once(
    postgres_url: str, tmp_path: Path, targets
) -> None:
    target = targets()
    env = forwarding_env("0.2")
    a = start_server(postgres_url, tmp_path, workers=2, extra_env=env)
    b = start_server(postgres_url, tmp_path, workers=2, extra_env=env)
    try:
        _deliver_once_each([a, b], target)
    finally:
        a.close()
        b.close()
