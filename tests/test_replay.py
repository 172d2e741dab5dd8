"""Replay and auto-forward: stored requests sent again to a target, answers kept as attempts."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import Server, create_bin, free_port, wait_until
from tests.echo import EchoTarget, start_echo


@pytest.fixture
def echo() -> Iterator[EchoTarget]:
    target = start_echo()
    yield target
    target.close()


def _capture(server: Server, bin_: dict, sub: str = "/hook?x=1", **kwargs) -> str:
    response = httpx.request(kwargs.pop("method", "POST"), bin_["capture_url"] + sub, **kwargs)
    assert response.status_code == 200
    return response.json()["request_id"]


def test_replay_sends_the_same_request_and_shows_the_answer(shared_server: Server, echo) -> None:
    bin_ = shared_server.create_bin()
    body = b'{"event":"ping"}\x00\xff'
    rid = _capture(
        shared_server,
        bin_,
        "/github/hook?a=1&a=2",
        method="PROPFIND",
        content=body,
        headers=[
            ("X-Dup", "1"),
            ("X-Dup", "2"),
            ("Content-Type", "application/json"),
            ("Keep-Alive", "timeout=5"),
            ("Connection", "keep-alive"),
        ],
    )
    echo.extra_headers = [("X-Echo", "yes")]
    response = httpx.post(
        f"{shared_server.url}/api/requests/{rid}/replay", json={"url": echo.url + "/base"}
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] == 201
    assert ["X-Echo", "yes"] in answer["headers"]
    assert answer["body_size"] == len(answer["body_text"].encode())
    assert answer["elapsed_ms"] >= 0

    [got] = echo.wait_for(1)
    assert got.method == "PROPFIND"
    assert got.path == "/base/github/hook?a=1&a=2"
    assert got.body == body
    names = [name.lower() for name, _ in got.headers]
    assert [v for n, v in got.headers if n == "X-Dup"] == ["1", "2"]
    assert "keep-alive" not in names  # hop-by-hop headers are not replayed
    assert dict((n.lower(), v) for n, v in got.headers)["host"] == echo.url.split("//")[1]

    attempts = httpx.get(f"{shared_server.url}/api/requests/{rid}/attempts").json()["items"]
    assert [a["status"] for a in attempts] == [201]
    assert attempts[0]["kind"] == "replay"


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://2852039166/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fd00:ec2::254]/",
        "http://100.100.100.200/",
        "ftp://127.0.0.1/",
        "http://user@127.0.0.1/",
    ],
)
def test_replay_refuses_metadata_and_odd_targets(shared_server: Server, url: str) -> None:
    bin_ = shared_server.create_bin()
    rid = _capture(shared_server, bin_)
    response = httpx.post(f"{shared_server.url}/api/requests/{rid}/replay", json={"url": url})
    assert response.status_code == 422
    assert response.json()["error"]
    assert httpx.get(f"{shared_server.url}/api/requests/{rid}/attempts").json()["items"] == []


def test_replay_to_own_capture_url_is_refused(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    rid = _capture(shared_server, bin_)
    response = httpx.post(
        f"{shared_server.url}/api/requests/{rid}/replay", json={"url": bin_["capture_url"]}
    )
    assert response.status_code == 422


def test_unreachable_target_is_502_and_stored(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    rid = _capture(shared_server, bin_)
    dead = f"http://127.0.0.1:{free_port()}/"
    response = httpx.post(f"{shared_server.url}/api/requests/{rid}/replay", json={"url": dead})
    assert response.status_code == 502
    assert "refused" in response.json()["error"]
    [attempt] = httpx.get(f"{shared_server.url}/api/requests/{rid}/attempts").json()["items"]
    assert attempt["status"] is None and attempt["error"]


def _capture_in_process(client: FlaskClient) -> str:
    bin_id = create_bin(client)["id"]
    response = client.post(f"/h/{bin_id}/hook?x=1")
    assert response.status_code == 200
    return response.get_json()["request_id"]


def test_slow_target_times_out(make_app: Callable[..., Flask], echo) -> None:
    client = make_app(replay_timeout_seconds=0.5).test_client()
    rid = _capture_in_process(client)
    echo.delay = 2
    response = client.post(f"/api/requests/{rid}/replay", json={"url": echo.url})
    assert response.status_code == 502
    assert "timed out" in response.get_json()["error"]


def test_public_instance_refuses_private_targets(make_app: Callable[..., Flask], echo) -> None:
    client = make_app(allow_private_targets=False).test_client()
    rid = _capture_in_process(client)
    for url in (echo.url, "http://2130706433:1/", "http://[::1]:1/", "http://10.0.0.1/"):
        response = client.post(f"/api/requests/{rid}/replay", json={"url": url})
        assert response.status_code == 422, url
    assert echo.received == []


def test_auto_forward_never_delays_the_sender(shared_server: Server, echo) -> None:
    bin_ = shared_server.create_bin()
    httpx.patch(
        f"{shared_server.url}/api/bins/{bin_['id']}",
        json={"forward_url": echo.url, "auto_forward": True},
    )
    echo.delay = 1.5
    started = time.monotonic()
    ids = [_capture(shared_server, bin_, f"/n{i}", content=f"{i}".encode()) for i in range(3)]
    assert time.monotonic() - started < 1.5, "the sender waited for the forward target"
    got = echo.wait_for(3, timeout=15)
    assert [r.path for r in got] == ["/n0", "/n1", "/n2"]  # delivered in capture order
    assert [r.body for r in got] == [b"0", b"1", b"2"]
    url = f"{shared_server.url}/api/requests/{ids[-1]}/attempts"
    wait_until(lambda: httpx.get(url).json()["items"], 5, "the forward attempt")
    [attempt] = httpx.get(url).json()["items"]
    assert attempt["kind"] == "forward" and attempt["status"] == 201


def test_target_answer_is_escaped_and_hx_headers_stay_out(shared_server: Server, echo) -> None:
    bin_ = shared_server.create_bin()
    rid = _capture(shared_server, bin_)
    echo.body = b"<script>alert('pwned')</script><div hx-get='/x' hx-trigger='load'>"
    echo.extra_headers = [("HX-Redirect", "/evil"), ("HX-Trigger", "pwn"), ("Set-Cookie", "a=b")]
    page = httpx.post(
        f"{shared_server.url}/bins/{bin_['id']}/requests/{rid}/replay",
        data={"url": echo.url},
        headers={"HX-Request": "true"},
    )
    assert page.status_code == 200
    assert not any(name.lower().startswith("hx-") for name in page.headers)
    assert "set-cookie" not in page.headers
    assert "<script>alert" not in page.text
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in page.text
    assert "HX-Redirect" in page.text  # shown as text in the answer's header table
