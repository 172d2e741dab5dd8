"""Bad senders: bodies cut short, bodies that trickle in, bodies that are very large.

Each must cost bounded time and memory, never be stored as if it were complete, never be answered
200, and never keep other senders from being captured promptly.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from app.rules.match import MAX_PARSED_BODY_BYTES, Incoming, choose
from app.rules.templates import render_template
from app.rules.validate import validate_responses
from tests.conftest import Server, raw_http, start_server
from tests.faults_support import wait_until, worker_pids


@pytest.fixture(scope="module")
def quick_timeout_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One worker whose bodies must arrive within 3 s."""
    tmp = tmp_path_factory.mktemp("bodies")
    srv = start_server(
        f"sqlite:///{tmp / 'hookbin.sqlite3'}",
        tmp,
        extra_env={"HOOKBIN_BODY_TIMEOUT_SECONDS": "3"},
    )
    yield srv
    srv.stop()


def _count(server: Server, bin_id: str) -> int:
    return len(httpx.get(f"{server.url}/api/bins/{bin_id}/requests", timeout=10).json()["items"])


def _status(answer: bytes) -> int | None:
    if not answer.startswith(b"HTTP/1.1 "):
        return None
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize(
    "partial",
    [
        b"Content-Length: 100\r\n\r\n" + b"a" * 50,
        b"Content-Length: 200000\r\n\r\n" + b"a" * 100_000,  # past the first read
        b"Transfer-Encoding: chunked\r\n\r\n10\r\n0123",
        b"Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n",  # no last chunk
    ],
    ids=["short", "short-large", "chunk-cut", "no-last-chunk"],
)
def test_a_body_cut_short_by_a_half_close_is_answered_400_and_not_stored(
    quick_timeout_server: Server, partial: bytes
) -> None:
    srv = quick_timeout_server
    bin_id = srv.create_bin()["id"]
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(f"POST /h/{bin_id}/cut HTTP/1.1\r\nHost: x\r\n".encode() + partial)
        sock.shutdown(socket.SHUT_WR)  # the sender is done, though its body is not
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert _status(answer) == 400, answer[:200]
    assert b"nothing was stored" in answer
    assert _count(srv, bin_id) == 0


def test_a_body_cut_short_by_a_close_is_not_stored(quick_timeout_server: Server) -> None:
    srv = quick_timeout_server
    bin_id = srv.create_bin()["id"]
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(
            f"POST /h/{bin_id}/cut HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab".encode()
        )
    # A complete request afterwards is stored; the cut one never is.
    complete = raw_http(
        srv.port,
        f"POST /h/{bin_id}/whole HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        "Connection: close\r\n\r\nok".encode(),
    )
    assert _status(complete) == 200
    items = httpx.get(f"{srv.url}/api/bins/{bin_id}/requests", timeout=10).json()["items"]
    assert [i["path"] for i in items] == ["/whole"]


def test_hundreds_of_trickling_bodies_time_out_and_do_not_starve_other_senders(
    quick_timeout_server: Server,
) -> None:
    srv = quick_timeout_server
    slow_bin = srv.create_bin()["id"]
    fast_bin = srv.create_bin()["id"]
    head = f"POST /h/{slow_bin}/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode()
    slow: list[socket.socket] = []
    answers: dict[int, bytes] = {}
    try:
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            s.sendall(head)
            s.setblocking(False)
            slow.append(s)
        started = time.monotonic()
        stop = threading.Event()

        def trickle() -> None:
            # One byte per socket per half second, for at most 20 s: the test ends by itself.
            while not stop.is_set() and time.monotonic() - started < 20:
                for i, s in enumerate(slow):
                    if i in answers:
                        continue
                    try:
                        data = s.recv(65536)
                    except BlockingIOError:
                        data = None
                    except OSError:
                        data = b""
                    if data is not None:
                        answers[i] = data  # an answer, or the server closed the connection
                        continue
                    try:
                        s.send(b"x")
                    except OSError:
                        answers[i] = b""
                stop.wait(0.5)

        trickler = threading.Thread(target=trickle, daemon=True)
        trickler.start()

        # Meanwhile a normal sender is captured and answered promptly, every time.
        latencies = []
        with httpx.Client(timeout=10) as client:
            for i in range(20):
                sent = time.monotonic()
                response = client.post(f"{srv.url}/h/{fast_bin}/{i}", content=b"{}")
                latencies.append(time.monotonic() - sent)
                assert response.status_code == 200
        assert max(latencies) < 1.0, f"a normal capture took {max(latencies):.2f} s"

        wait_until(lambda: len(answers) == len(slow), 20, "trickling bodies were not dropped")
        elapsed = time.monotonic() - started
        stop.set()
        trickler.join(5)
    finally:
        for s in slow:
            s.close()
    assert elapsed < 10, f"dropping the trickling bodies took {elapsed:.1f} s"
    statuses = {_status(a) for a in answers.values()}
    assert statuses <= {408, None}, statuses  # 408, or closed before the answer could be read
    assert 408 in statuses
    assert _count(srv, slow_bin) == 0
    assert _count(srv, fast_bin) == 20


def _vm(pid: int, key: str) -> int:
    """A /proc/<pid>/status memory figure (VmRSS, VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) // 1024
    raise AssertionError(f"no {key} for {pid}")


def test_concurrent_large_uploads_to_a_bin_with_json_rules_cost_bounded_memory(
    tmp_path: Path, sqlite_url: str
) -> None:
    srv = start_server(sqlite_url, tmp_path)
    try:
        bin_ = srv.create_bin()
        rules = {
            "rules": [
                {"id": "big", "json": {"field": "kind", "equals": "big"}, "answer": {"status": 202}}
            ]
        }
        changed = httpx.patch(f"{srv.url}/api/bins/{bin_['id']}", json={"responses": rules})
        assert changed.status_code == 200, changed.text
        [worker] = worker_pids(srv.process.pid)
        # A JSON body of 24 MiB: many small values, the costliest kind to parse.
        body = b'{"kind": "big", "items": [' + b",".join([b'{"a": 1}'] * 2_600_000) + b"]}"
        assert 20 * 2**20 < len(body) < 25 * 2**20
        small = b'{"kind": "big"}'
        assert httpx.post(bin_["capture_url"], content=small).status_code == 202
        rss_before = _vm(worker, "VmRSS")

        uploads = 12
        with ThreadPoolExecutor(max_workers=uploads + 1) as pool:
            futures = [
                pool.submit(httpx.post, bin_["capture_url"], content=body, timeout=120)
                for _ in range(uploads)
            ]
            # A small capture meanwhile is answered (it may share a commit with large ones).
            sent = time.monotonic()
            assert httpx.post(bin_["capture_url"], content=small, timeout=60).status_code == 202
            small_latency = time.monotonic() - sent
            statuses = [f.result().status_code for f in futures]
        peak, rss_after = _vm(worker, "VmHWM"), _vm(worker, "VmRSS")
        print(  # shown with -s: the figures for the record
            f"\nworker RSS before {rss_before} MiB, peak {peak} MiB, after {rss_after} MiB "
            f"({uploads} concurrent uploads of {len(body) // 2**20} MiB); "
            f"small capture meanwhile {small_latency:.2f} s"
        )
        # Too large to be parsed for the rule: they do not match it, and are stored as usual.
        assert statuses == [200] * uploads
        items = httpx.get(f"{srv.url}/api/bins/{bin_['id']}/requests").json()["items"]
        assert sorted(i["body_size"] for i in items) == [len(small)] * 2 + [len(body)] * uploads
        # Generous bounds: at the peak each body is held about twice over at most, and less
        # than one copy of them all is kept once they are stored.
        uploaded = uploads * len(body) // 2**20
        assert peak - rss_before < 2 * uploaded, f"peak {peak} MiB for {uploaded} MiB uploaded"
        assert rss_after - rss_before < uploaded, f"{rss_after} MiB held after the uploads"
    finally:
        srv.stop()


def test_rules_and_templates_do_not_parse_a_body_over_the_parse_cap() -> None:
    rules = validate_responses(
        {
            "rules": [
                {"id": "kind", "json": {"field": "kind", "equals": "big"}},
                {"id": "no-json", "json": {"field": "kind", "present": False}},
            ]
        }
    )["rules"]  # type: ignore[index]
    padding = b" " * (MAX_PARSED_BODY_BYTES - len(b'{"kind": "big"}'))

    def incoming(body: bytes, content_type: str = "application/json") -> Incoming:
        return Incoming(
            method="POST",
            path="/",
            query_string="",
            headers=[],
            body=body,
            content_type=content_type,
        )

    at_cap = incoming(b'{"kind": "big"}' + padding)
    over = incoming(b'{"kind": "big"}' + padding + b" ")
    assert choose(rules, at_cap)["id"] == "kind"  # type: ignore[index]
    # Over the cap no JSON condition holds, not even "present": false.
    assert choose(rules, over) is None
    assert over.json is None and over.text == ""
    assert render_template("[{{ body|length }} {{ json }}]", over, where="t") == "[0 null]"
    form = incoming(b"a=" + b"b" * MAX_PARSED_BODY_BYTES, "application/x-www-form-urlencoded")
    assert form.form == {}
