"""Rate limits and sender lists on real servers: several gunicorn workers, two instances on one
PostgreSQL database, a trusted proxy hop and a forged one.

Windows are one second (or one minute) on the clock, which the test shares with the servers. A
request whose send and answer fall in the same second was counted in that second's window; the
others may belong to either side, and the checks below allow for both.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import TEST_OPERATOR, Server, start_server

LIMIT = 40  # per second: chunks of 2 (a twentieth), so the shared count is added up in chunks
PROCESSES = 2
TOLERANCE = 2 * PROCESSES * (math.ceil(LIMIT / 20) - 1)  # docs/limits.md: N + 2P(chunk - 1)


@dataclass
class Answer:
    status: int
    retry_after: str | None
    request_id: str | None
    sent: float
    answered: float

    @property
    def windows(self) -> range:
        return range(int(self.sent), int(self.answered) + 1)


def burst(urls: list[str], total: int, threads: int = 16) -> list[Answer]:
    """``total`` captures spread over ``urls`` and ``threads`` fresh connections at once,
    starting at the beginning of a second so that most of them share one window."""
    answers: list[Answer] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def sender(number: int) -> None:
        # A connection per thread and server: the kernel hands them to the workers as they accept.
        clients = {url: httpx.Client(timeout=30) for url in urls}
        start.wait()
        for i in range(number, total, threads):
            sent = time.time()
            url = urls[i % len(urls)]
            response = clients[url].post(url, content=b'{"n": %d}' % i)
            answer = Answer(
                response.status_code,
                response.headers.get("Retry-After"),
                response.json().get("request_id"),
                sent,
                time.time(),
            )
            with lock:
                answers.append(answer)
        for client in clients.values():
            client.close()

    while time.time() % 1 > 0.2:  # poll the clock: start early in a second
        time.sleep(0.01)
    workers = [threading.Thread(target=sender, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return answers


def check_limit_held(answers: list[Answer], limit: int, tolerance: int) -> None:
    """Per window: no more than limit + tolerance admitted, and nothing refused before the
    limit was reached; every refusal says when to come back."""
    admitted = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status == 429]
    assert len(admitted) + len(refused) == len(answers), Counter(a.status for a in answers)
    assert refused, "the burst never went beyond the limit"
    assert {a.retry_after for a in refused} == {"1"}
    exact: Counter[int] = Counter()
    maybe: Counter[int] = Counter()
    for a in admitted:
        if len(a.windows) == 1:
            exact[a.windows[0]] += 1
        else:
            for w in a.windows:
                maybe[w] += 1
    for window, count in exact.items():
        assert count <= limit + tolerance, f"window {window}: {count} admitted"
    for a in refused:
        if len(a.windows) == 1:
            window = a.windows[0]
            assert exact[window] + maybe[window] >= limit, f"window {window} refused early"


def early_in_a_minute() -> None:
    """Poll the clock until at least ten seconds of the current minute are left, so that a
    test of an N/min limit runs inside one window."""
    while time.time() % 60 > 50:
        time.sleep(0.2)


def stored_ids(server: Server, bin_id: str) -> set[str]:
    ids: set[str] = set()
    before = ""
    while True:
        page = httpx.get(
            f"{server.url}/api/bins/{bin_id}/requests?limit=500{before}", timeout=10
        ).json()
        ids |= {item["id"] for item in page["items"]}
        if not page["next"]:
            return ids
        before = f"&before={page['next']}"


@pytest.fixture
def two_workers(sqlite_url: str, tmp_path: Path) -> Iterator[Server]:
    server = start_server(
        sqlite_url,
        tmp_path,
        workers=PROCESSES,
        extra_env={"HOOKBIN_BIN_RATE_LIMIT": f"{LIMIT}/s", "HOOKBIN_CREATE_RATE_LIMIT": "5/min"},
    )
    yield server
    server.stop()


def test_a_bin_limit_holds_across_the_workers_and_nothing_beyond_it_is_stored(
    two_workers: Server,
) -> None:
    bin_id = two_workers.create_bin()["id"]
    answers = burst([f"{two_workers.url}/h/{bin_id}/burst"], total=6 * LIMIT)
    check_limit_held(answers, LIMIT, TOLERANCE)
    assert stored_ids(two_workers, bin_id) == {a.request_id for a in answers if a.status == 200}
    # Another bin has a limit of its own.
    other = two_workers.create_bin()["id"]
    assert httpx.post(f"{two_workers.url}/h/{other}", timeout=10).status_code == 200


@pytest.mark.anonymous  # as a stranger: operators are not held to the creation limit
def test_bin_creation_is_limited_per_source(two_workers: Server, sqlite_url: str) -> None:
    early_in_a_minute()
    # A fresh connection each: both workers take some, and count together.
    made = [httpx.post(f"{two_workers.url}/api/bins", timeout=10) for _ in range(8)]
    assert [r.status_code for r in made] == [201] * 5 + [429] * 3
    for r in made[5:]:
        assert r.json() == {"error": "too many bins made from this address (limit 5/min)"}
        assert 1 <= int(r.headers["Retry-After"]) <= 60
    # A person at the page's form gets the page again, saying why.
    page = httpx.post(f"{two_workers.url}/bins", headers={"Accept": "text/html"})
    assert page.status_code == 429
    assert "too many bins made from this address" in page.text
    assert page.headers["Content-Type"].startswith("text/html")
    assert 1 <= int(page.headers["Retry-After"]) <= 60
    # An operator is not held to it.
    operator = {"Authorization": f"Bearer {TEST_OPERATOR}"}
    assert httpx.post(f"{two_workers.url}/api/bins", headers=operator).status_code == 201
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as conn:
        count = conn.execute(sa.text("SELECT count(*) FROM bins")).scalar()
    engine.dispose()
    assert count == 6


def test_two_instances_on_postgresql_share_a_bin_limit(postgres_url: str, tmp_path: Path) -> None:
    env = {"HOOKBIN_BIN_RATE_LIMIT": f"{LIMIT}/s"}
    first = start_server(postgres_url, tmp_path, extra_env=env)
    try:
        second = start_server(postgres_url, tmp_path, extra_env=env)
        try:
            bin_id = first.create_bin()["id"]
            urls = [f"{server.url}/h/{bin_id}" for server in (first, second)]
            answers = burst(urls, total=6 * LIMIT)
            check_limit_held(answers, LIMIT, TOLERANCE)
            kept = {a.request_id for a in answers if a.status == 200}
            assert stored_ids(second, bin_id) == kept
        finally:
            second.stop()
    finally:
        first.stop()


# --- sender lists ---------------------------------------------------------------------------------


def capture(server: Server, bin_id: str, forwarded_for: str | None = None) -> httpx.Response:
    headers = {} if forwarded_for is None else {"X-Forwarded-For": forwarded_for}
    return httpx.post(f"{server.url}/h/{bin_id}/hook", content=b"{}", headers=headers, timeout=10)


def set_senders(server: Server, bin_id: str, senders: list[str], action: str) -> dict:
    body = {"senders": senders, "senders_action": action}
    response = httpx.patch(f"{server.url}/api/bins/{bin_id}", json=body, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def refused_before_the_body(server: Server, bin_id: str, forwarded_for: str) -> bytes:
    """The first line answered to a request announcing 10 MB of body and sending none."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            f"POST /h/{bin_id} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {forwarded_for}\r\n"
            "Content-Length: 10000000\r\n\r\n".encode()
        )
        return sock.recv(4096).split(b"\r\n", 1)[0]


@pytest.fixture
def behind_a_proxy(sqlite_url: str, tmp_path: Path) -> Iterator[Server]:
    server = start_server(sqlite_url, tmp_path, extra_env={"HOOKBIN_PROXY_HOPS": "1"})
    yield server
    server.stop()


def test_senders_behind_a_trusted_proxy_are_refused_or_marked(behind_a_proxy: Server) -> None:
    server = behind_a_proxy
    bin_id = server.create_bin()["id"]
    shown = set_senders(server, bin_id, ["203.0.113.7/24", "2001:DB8::1"], "refuse")
    assert shown["senders"] == ["203.0.113.0/24", "2001:db8::1"]
    assert shown["senders_action"] == "refuse"

    listed = capture(server, bin_id, "203.0.113.5")
    assert listed.status_code == 200
    outside = capture(server, bin_id, "198.51.100.1")
    assert outside.status_code == 403
    assert outside.json() == {"error": "this bin does not take requests from this address"}
    # The proxy appends the address it saw; a sender's own entry before it does not count.
    assert capture(server, bin_id, "203.0.113.5, 198.51.100.1").status_code == 403
    assert capture(server, bin_id, "2001:db8::1").status_code == 200
    # Refused before a byte of the announced body is read.
    assert refused_before_the_body(server, bin_id, "198.51.100.1").endswith(b"403 Forbidden")

    items = httpx.get(f"{server.url}/api/bins/{bin_id}/requests", timeout=10).json()["items"]
    assert [(i["remote_addr"], i["sender_unlisted"]) for i in items] == [
        ("2001:db8::1", False),
        ("203.0.113.5", False),
    ]

    set_senders(server, bin_id, ["203.0.113.0/24"], "mark")
    kept = capture(server, bin_id, "198.51.100.1")
    assert kept.status_code == 200
    item = httpx.get(f"{server.url}/api/requests/{kept.json()['request_id']}", timeout=10).json()
    assert (item["remote_addr"], item["sender_unlisted"]) == ("198.51.100.1", True)
    page = httpx.get(f"{server.url}/bins/{bin_id}", timeout=10).text
    assert page.count("unlisted sender") == 1  # the one marked row
    detail = httpx.get(f"{server.url}/bins/{bin_id}/r/{item['id']}", timeout=10).text
    assert 'id="sender-unlisted"' in detail

    # Back to everyone: requests are neither refused nor marked.
    set_senders(server, bin_id, [], "refuse")
    again = capture(server, bin_id, "198.51.100.1")
    item = httpx.get(f"{server.url}/api/requests/{again.json()['request_id']}", timeout=10).json()
    assert item["sender_unlisted"] is None


def test_a_forged_forwarded_for_does_not_help_without_a_trusted_proxy(server: Server) -> None:
    bin_id = server.create_bin()["id"]
    set_senders(server, bin_id, ["203.0.113.0/24"], "refuse")
    assert capture(server, bin_id, "203.0.113.5").status_code == 403
    set_senders(server, bin_id, ["127.0.0.1"], "mark")
    kept = capture(server, bin_id, "203.0.113.5")
    assert kept.status_code == 200
    item = httpx.get(f"{server.url}/api/requests/{kept.json()['request_id']}", timeout=10).json()
    assert (item["remote_addr"], item["sender_unlisted"]) == ("127.0.0.1", False)


def test_the_source_limit_counts_the_address_behind_the_proxy(
    sqlite_url: str, tmp_path: Path
) -> None:
    env = {"HOOKBIN_PROXY_HOPS": "1", "HOOKBIN_SOURCE_RATE_LIMIT": "3/min"}
    server = start_server(sqlite_url, tmp_path, extra_env=env)
    try:
        bin_id = server.create_bin()["id"]
        early_in_a_minute()
        assert [capture(server, bin_id, "203.0.113.5").status_code for _ in range(4)] == [
            200,
            200,
            200,
            429,
        ]
        assert capture(server, bin_id, "203.0.113.6").status_code == 200
        # Probing for bins counts too: the source is counted before the bin is looked up.
        probe = httpx.get(f"{server.url}/h/no-such-bin", headers={"X-Forwarded-For": "203.0.113.6"})
        assert probe.status_code == 404
        assert capture(server, bin_id, "203.0.113.6").status_code == 200
        assert capture(server, bin_id, "203.0.113.6").status_code == 429
    finally:
        server.stop()


def test_the_page_settings_form_saves_and_refuses_sender_lists(server: Server) -> None:
    bin_id = server.create_bin()["id"]
    url = f"{server.url}/bins/{bin_id}/settings"
    form = {
        "forward_url": "",
        "senders": "203.0.113.0/24\n\n2001:db8::1\n",
        "senders_action": "mark",
    }
    assert httpx.post(url, data=form, timeout=10).status_code == 303
    shown = httpx.get(f"{server.url}/api/bins/{bin_id}", timeout=10).json()
    assert (shown["senders"], shown["senders_action"]) == (
        ["203.0.113.0/24", "2001:db8::1"],
        "mark",
    )
    page = httpx.get(f"{server.url}/bins/{bin_id}", timeout=10).text
    assert "203.0.113.0/24\n2001:db8::1</textarea>" in page

    refused = httpx.post(url, data={**form, "senders": "example.com"}, timeout=10)
    assert refused.status_code == 422
    assert "is not an IPv4 or IPv6 address or CIDR range" in refused.text
    assert "example.com</textarea>" in refused.text  # what was typed stays
    assert httpx.get(f"{server.url}/api/bins/{bin_id}", timeout=10).json()["senders"] == [
        "203.0.113.0/24",
        "2001:db8::1",
    ]
