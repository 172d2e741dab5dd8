"""Which answers of an auto-forward target count as delivered: 2xx only, never a redirect.

A real ``hookbin serve`` forwards to real local targets (``tests/echo.py``). A target answering
3xx is not followed and not delivered: its forward is retried and given up on exactly like one
answering 503. Schedules are short, and no assertion depends on timing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from app.delivery import queue as forwardqueue
from tests.conftest import Server, start_server
from tests.echo import EchoTarget, start_echo

WAIT = 30.0  # seconds; generous on purpose
SCHEDULE = "0.2,0.4"  # the first try and two retries
TRIES = 3


@pytest.fixture
def echoes() -> Iterator[Callable[[], EchoTarget]]:
    started: list[EchoTarget] = []

    def make() -> EchoTarget:
        target = start_echo()
        started.append(target)
        return target

    yield make
    for target in started:
        target.close()


def wait_until(check: Callable[[], object], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def forwarding_bin(server: Server, url: str) -> dict:
    bin_ = server.create_bin()
    response = httpx.patch(
        f"{server.url}/api/bins/{bin_['id']}",
        json={"forward_url": url, "auto_forward": True},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return bin_


def forward_state(server: Server, rid: str) -> dict:
    response = httpx.get(f"{server.url}/api/requests/{rid}/forward", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def settled(server: Server, rid: str) -> dict:
    def done() -> bool:
        return forward_state(server, rid)["state"] != "pending"

    wait_until(done, f"the forward of {rid} to settle")
    return forward_state(server, rid)


def forward_statuses(server: Server, rid: str) -> list[int | None]:
    items = httpx.get(f"{server.url}/api/requests/{rid}/attempts", timeout=10).json()["items"]
    return [a["status"] for a in reversed(items) if a["kind"] == "forward"]


def test_only_2xx_is_delivered_and_a_redirect_is_retried_then_given_up_like_a_503(
    tmp_path: Path, sqlite_url: str, echoes: Callable[[], EchoTarget]
) -> None:
    landing = echoes()  # where every redirect points: it must never be reached
    statuses = [204, 301, 302, 307, 503]
    targets: dict[int, EchoTarget] = {}
    for status in statuses:
        target = echoes()
        target.status = status
        if 300 <= status < 400:
            target.extra_headers = [("Location", f"{landing.url}/landed")]
        targets[status] = target

    server = start_server(
        sqlite_url,
        tmp_path,
        extra_env={
            "HOOKBIN_FORWARD_RETRY_SCHEDULE": SCHEDULE,
            "HOOKBIN_FORWARD_POLL_SECONDS": "0.2",
            "HOOKBIN_REPLAY_TIMEOUT_SECONDS": "2",
        },
    )
    try:
        ids: dict[int, str] = {}
        for status in statuses:
            bin_ = forwarding_bin(server, targets[status].url)
            response = httpx.post(bin_["capture_url"] + "/hook", content=b"x", timeout=10)
            assert response.status_code == 200, response.text
            ids[status] = response.json()["request_id"]

        delivered = settled(server, ids[204])
        assert delivered["state"] == "delivered" and delivered["tries"] == 1
        assert forward_statuses(server, ids[204]) == [204]

        for status in (301, 302, 307, 503):
            state = settled(server, ids[status])
            assert state["state"] == "failed", (status, state)
            assert state["tries"] == TRIES, (status, state)
            assert state["last_error"] == f"the target answered {status}"
            assert state["summary"] == (
                f"gave up after {TRIES} tries: the target answered {status}"
            )
            assert forward_statuses(server, ids[status]) == [status] * TRIES
            assert [r.path for r in targets[status].received] == ["/hook"] * TRIES
        assert landing.received == [], "a redirect must not be followed"
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("status", "delivered"),
    [(None, False), (199, False), (200, True), (226, True), (299, True), (300, False),
     (301, False), (304, False), (308, False), (404, False), (500, False)],
)  # fmt: skip
def test_is_success_is_2xx_only(status: int | None, delivered: bool) -> None:
    assert forwardqueue.is_success(status) is delivered
