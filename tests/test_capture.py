"""Capturing requests: what a sender sends is what Hookbin stores, byte for byte.

These tests talk to a real ``hookbin serve`` (gunicorn, gevent worker) over raw sockets, so that
nothing between the test and the server tidies the request up.
"""

from __future__ import annotations

import gzip
import json
import socket

import httpx
import pytest

from tests.conftest import Server, raw_http


def _items(server: Server, bin_id: str) -> list[dict]:
    response = httpx.get(f"{server.url}/api/bins/{bin_id}/requests", timeout=10)
    assert response.status_code == 200
    return response.json()["items"]


def _body(server: Server, request_id: str) -> bytes:
    response = httpx.get(f"{server.url}/api/requests/{request_id}/body", timeout=10)
    assert response.status_code == 200
    return response.content


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_headers_keep_order_repeats_and_spelling(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    path = f"/h/{bin_['id']}/hooks/github?b=2&a=1&a=%20x"
    request = (
        f"POST {path} HTTP/1.1\r\n"
        "Host: example.test\r\n"
        "X-GitHub-Event: push\r\n"
        "x-dup: one\r\n"
        "X-Dup: two\r\n"
        "Set-Cookie: session=stolen\r\n"
        "weird_Under_score: kept\r\n"
        "Content-Type: application/json\r\n"
        "Content-Length: 2\r\n"
        "Connection: close\r\n\r\n{}"
    ).encode()
    answer = raw_http(shared_server.port, request)
    assert _status(answer) == 200
    # A captured Set-Cookie must never become ours.
    assert b"session=stolen" not in answer.split(b"\r\n\r\n")[0]

    [item] = _items(shared_server, bin_["id"])
    assert item["headers"] == [
        ["Host", "example.test"],
        ["X-GitHub-Event", "push"],
        ["x-dup", "one"],
        ["X-Dup", "two"],
        ["Set-Cookie", "session=stolen"],
        ["weird_Under_score", "kept"],
        ["Content-Type", "application/json"],
        ["Content-Length", "2"],
        ["Connection", "close"],
    ]
    assert item["header_source"] == "wire"
    assert item["method"] == "POST"
    assert item["path"] == "/hooks/github"
    assert item["query_string"] == "b=2&a=1&a=%20x"
    assert item["content_type"] == "application/json"
    assert item["remote_addr"] == "127.0.0.1"
    assert item["received_at"].endswith("Z")


@pytest.mark.parametrize(
    "method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND", "PURGE", "X-CUSTOM"]
)
def test_any_method_is_captured(shared_server: Server, method: str) -> None:
    bin_ = shared_server.create_bin()
    answer = raw_http(
        shared_server.port,
        f"{method} /h/{bin_['id']} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
    )
    assert _status(answer) == 200
    [item] = _items(shared_server, bin_["id"])
    assert item["method"] == method
    assert item["path"] == "/"
    assert item["body_size"] == 0


def test_binary_body_is_stored_byte_exact(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    body = bytes(range(256)) * 40 + b"\r\n\r\n\x00"
    head = (
        f"PUT /h/{bin_['id']}/upload HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    assert _status(raw_http(shared_server.port, head + body)) == 200
    [item] = _items(shared_server, bin_["id"])
    assert item["body_size"] == len(body)
    assert _body(shared_server, item["id"]) == body


def test_chunked_body_is_reassembled_exactly(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    pieces = [b'{"a":', b" 1, ", b'"b": "\xe2\x9c\x93"}']
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    head = (
        f"POST /h/{bin_['id']} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: application/json\r\nConnection: close\r\n\r\n"
    ).encode()
    assert _status(raw_http(shared_server.port, head + chunked)) == 200
    [item] = _items(shared_server, bin_["id"])
    assert _body(shared_server, item["id"]) == b"".join(pieces)
    assert ["Transfer-Encoding", "chunked"] in item["headers"]


def test_gzip_body_is_stored_compressed_and_shown_decoded(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    payload = json.dumps({"event": "order.created", "id": 7}).encode()
    compressed = gzip.compress(payload)
    response = httpx.post(
        f"{bin_['capture_url']}/shop",
        content=compressed,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert response.status_code == 200
    [item] = _items(shared_server, bin_["id"])
    assert _body(shared_server, item["id"]) == compressed
    page = httpx.get(f"{shared_server.url}/bins/{bin_['id']}/requests/{item['id']}").text
    assert "order.created" in page  # the decoded view
    assert "decoded from gzip" in page


def test_multipart_with_files_is_stored_exact(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
    response = httpx.post(
        bin_["capture_url"],
        data={"note": "hello"},
        files={"attachment": ("../../evil name.png", png, "image/png")},
    )
    assert response.status_code == 200
    [item] = _items(shared_server, bin_["id"])
    stored = _body(shared_server, item["id"])
    assert png in stored
    assert item["content_type"].startswith("multipart/form-data; boundary=")
    page = httpx.get(f"{shared_server.url}/bins/{bin_['id']}/requests/{item['id']}").text
    assert "../../evil name.png" in page
    assert "208 B" in page  # the part's size


def test_empty_body_and_head(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    assert httpx.post(bin_["capture_url"]).status_code == 200
    head = httpx.head(bin_["capture_url"] + "/ping")
    assert head.status_code == 200 and head.content == b""
    items = _items(shared_server, bin_["id"])
    assert [i["method"] for i in items] == ["HEAD", "POST"]
    assert all(i["body_size"] == 0 for i in items)


def test_path_and_query_are_kept_raw(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    target = f"/h/{bin_['id']}/a%2Fb/%E2%9C%93//x?q=%26&empty=&flag&u=%ZZ"
    answer = raw_http(
        shared_server.port,
        f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
    )
    assert _status(answer) == 200
    [item] = _items(shared_server, bin_["id"])
    assert item["path"] == "/a%2Fb/%E2%9C%93//x"
    assert item["query_string"] == "q=%26&empty=&flag&u=%ZZ"


def test_unknown_bin_is_404_and_nothing_is_stored(shared_server: Server) -> None:
    response = httpx.post(f"{shared_server.url}/h/doesnotexist/x", content=b"data")
    assert response.status_code == 404
    assert response.json() == {"error": "no such bin"}


def test_capture_answer_is_inert(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    response = httpx.post(
        bin_["capture_url"],
        content=b"<script>alert(1)</script>",
        headers={"Content-Type": "text/html"},
    )
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in response.headers["content-security-policy"]
    assert "set-cookie" not in response.headers
    assert response.json()["request_id"] == response.headers["x-hookbin-request-id"]


def test_oversized_body_is_refused_before_it_is_read(tmp_path, sqlite_url) -> None:
    from tests.conftest import start_server

    srv = start_server(sqlite_url, tmp_path, extra_env={"HOOKBIN_MAX_BODY_BYTES": "1000"})
    try:
        bin_ = srv.create_bin()
        # Announce 100 MB but send only the headers: a server that tried to read it all would
        # sit waiting instead of answering.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            sock.sendall(
                f"POST /h/{bin_['id']} HTTP/1.1\r\nHost: x\r\n"
                "Content-Length: 100000000\r\n\r\n".encode()
            )
            answer = b""
            while b"larger than" not in answer:
                chunk = sock.recv(65536)
                assert chunk, answer
                answer += chunk
        assert _status(answer) == 413
        assert b"larger than 1000 bytes" in answer

        # Chunked bodies have no length up front: the cap applies while reading.
        big = b"x" * 700
        chunked = (b"%x\r\n%s\r\n" % (len(big), big)) * 2 + b"0\r\n\r\n"
        head = (
            f"POST /h/{bin_['id']} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        assert _status(raw_http(srv.port, head + chunked)) == 413

        # Exactly at the cap is fine.
        assert httpx.post(bin_["capture_url"], content=b"y" * 1000).status_code == 200
        assert len(_items(srv, bin_["id"])) == 1
    finally:
        srv.close()
