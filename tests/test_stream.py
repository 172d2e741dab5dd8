"""Live streams: every capture reaches every viewer, on any worker or instance, once.

Real websocket clients (websocket-client) against real ``hookbin serve`` processes.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import websocket

from tests.conftest import PUSH_ONLY, Server, start_server, wait_until


class Viewer:
    """A websocket client collecting request frames in a background thread."""

    def __init__(self, server: Server, bin_id: str, after: str | None = None) -> None:
        url = f"{server.ws_url}/api/bins/{bin_id}/stream" + (f"?after={after}" if after else "")
        self.ws = websocket.create_connection(url, timeout=10)
        self.items: list[dict] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while True:
                data = self.ws.recv()
                if not data:
                    return  # closed by the server
                frame = json.loads(data)
                assert frame["type"] == "request"
                self.items.append(frame["request"])
        except (websocket.WebSocketException, OSError):
            return

    def wait_for(self, count: int, timeout: float = 15.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.items) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.items)

    def ids(self) -> list[str]:
        return [item["id"] for item in self.items]

    def close(self) -> None:
        self.ws.close()


#: One client, a new connection per request: each capture lands on whichever worker accepts it.
_SENDER = httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0))


def _capture(server: Server, bin_id: str, n: int, prefix: str = "n") -> list[str]:
    ids = []
    for i in range(n):
        response = _SENDER.post(f"{server.url}/h/{bin_id}/{prefix}{i}", content=f"{i}".encode())
        assert response.status_code == 200
        ids.append(response.json()["request_id"])
    return ids


def subscribed(server: Server, bin_id: str, viewers: list[Viewer]) -> None:
    """Return once the server streams new requests to every viewer, forgetting the probes.

    The handshake completes before the server subscribes a viewer, and a request captured in
    between is not new to it. Probes are captured until each viewer got one; a last one,
    streamed after every earlier probe, marks where the requests of the test begin.
    """
    deadline = time.monotonic() + 15
    while not all(viewer.items for viewer in viewers):
        assert time.monotonic() < deadline, "no probe reached a viewer"
        _capture(server, bin_id, 1, "probe")
        time.sleep(0.05)
    [marker] = _capture(server, bin_id, 1, "subscribed")
    for viewer in viewers:
        wait_until(lambda viewer=viewer: marker in viewer.ids(), 15, "the last probe")
        del viewer.items[: viewer.ids().index(marker) + 1]


def _last_then_exactly(server: Server, bin_id: str, viewers: list[Viewer], ids: list[str]) -> None:
    """Capture one last request and wait for it: requests stream in capture order, so anything
    streamed twice before it would be there too. Then every viewer must hold exactly ``ids``."""
    [last] = _capture(server, bin_id, 1, "last")
    for viewer in viewers:
        wait_until(lambda viewer=viewer: last in viewer.ids(), 15, "the last request")
        assert viewer.ids() == [*ids, last]


def test_a_viewer_gets_each_new_request_once(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    viewer = Viewer(shared_server, bin_["id"])
    try:
        subscribed(shared_server, bin_["id"], [viewer])
        ids = _capture(shared_server, bin_["id"], 5)
        items = viewer.wait_for(5)
        _last_then_exactly(shared_server, bin_["id"], [viewer], ids)
        first = items[0]
        assert first["path"] == "/n0"
        assert first["bin_id"] == bin_["id"]
        assert "body" not in first and "seq" not in first
        assert ["Content-Length", "1"] in first["headers"]
    finally:
        viewer.close()


def test_after_sends_the_backlog_then_live_without_gap_or_duplicate(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    earlier = _capture(shared_server, bin_["id"], 6, "old")
    viewer = Viewer(shared_server, bin_["id"], after=earlier[1])
    try:
        assert [i["id"] for i in viewer.wait_for(4)] == earlier[2:]
        later = _capture(shared_server, bin_["id"], 3, "new")
        _last_then_exactly(shared_server, bin_["id"], [viewer], earlier[2:] + later)
    finally:
        viewer.close()


def test_stream_refuses_unknown_bins_and_bad_cursors(shared_server: Server) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as excinfo:
        websocket.create_connection(f"{shared_server.ws_url}/api/bins/nope/stream", timeout=5)
    assert excinfo.value.status_code == 404
    bin_ = shared_server.create_bin()
    with pytest.raises(websocket.WebSocketBadStatusException) as excinfo:
        websocket.create_connection(
            f"{shared_server.ws_url}/api/bins/{bin_['id']}/stream?after=garbage", timeout=5
        )
    assert excinfo.value.status_code == 400


def _fan_in(capture_servers: list[Server], view_servers: list[Server], n: int = 30) -> None:
    """Viewers on some processes see every capture made through the others, in order, once."""
    bin_ = capture_servers[0].create_bin()
    viewers = [Viewer(s, bin_["id"]) for s in view_servers for _ in range(3)]
    try:
        subscribed(capture_servers[0], bin_["id"], viewers)
        ids: list[str] = []
        for i in range(n):
            server = capture_servers[i % len(capture_servers)]
            ids += _capture(server, bin_["id"], 1, f"r{i}-")
        for viewer in viewers:
            got = [item["id"] for item in viewer.wait_for(n)]
            assert got == ids
        _last_then_exactly(capture_servers[-1], bin_["id"], viewers, ids)
    finally:
        for viewer in viewers:
            viewer.close()


def test_two_workers_share_live_updates(tmp_path: Path, sqlite_url: str) -> None:
    srv = start_server(sqlite_url, tmp_path, workers=2, extra_env=PUSH_ONLY)
    try:
        # Each connection lands on whichever worker accepts it; with 3 viewers and 30 captures
        # over fresh connections, both workers serve both roles.
        _fan_in([srv], [srv])
    finally:
        srv.stop()


def test_two_instances_on_one_sqlite_file_share_live_updates(
    tmp_path: Path, sqlite_url: str
) -> None:
    a = start_server(sqlite_url, tmp_path, extra_env=PUSH_ONLY)
    b = start_server(sqlite_url, tmp_path, extra_env=PUSH_ONLY)
    try:
        _fan_in([b], [a])  # captured only by B, watched only on A
        _fan_in([a, b], [a, b])
    finally:
        a.stop()
        b.stop()


def test_viewer_resumes_after_a_server_restart(tmp_path: Path, sqlite_url: str) -> None:
    srv = start_server(sqlite_url, tmp_path)
    bin_ = srv.create_bin()
    viewer = Viewer(srv, bin_["id"])
    subscribed(srv, bin_["id"], [viewer])
    first = _capture(srv, bin_["id"], 3)
    assert [i["id"] for i in viewer.wait_for(3)] == first
    srv.stop()
    viewer.close()
    srv = start_server(sqlite_url, tmp_path, port=srv.port)
    try:
        missed = _capture(srv, bin_["id"], 2, "while-away")
        resumed = Viewer(srv, bin_["id"], after=viewer.items[-1]["id"])
        try:
            assert [i["id"] for i in resumed.wait_for(2)] == missed
        finally:
            resumed.close()
    finally:
        srv.stop()


def test_the_zero_cursor_means_from_the_start(shared_server: Server) -> None:
    # The bin page of an empty bin connects with this cursor, so that a request landing between
    # the page render and the websocket handshake still shows up.
    bin_ = shared_server.create_bin()
    ids = _capture(shared_server, bin_["id"], 2)
    viewer = Viewer(shared_server, bin_["id"], after="0" * 32)
    try:
        assert [i["id"] for i in viewer.wait_for(2)] == ids
    finally:
        viewer.close()


def test_a_viewer_that_stalls_gets_every_request_intact_when_it_reads_again(
    tmp_path: Path, sqlite_url: str
) -> None:
    """A viewer that stops reading while big requests pour in: the server keeps only
    HOOKBIN_STREAM_MAX_BACKLOG of them in memory and reads the rest from the database later,
    and every frame arrives whole (large frames once got cut off mid-write)."""
    server = start_server(sqlite_url, tmp_path, extra_env={"HOOKBIN_STREAM_MAX_BACKLOG": "50"})
    try:
        bin_ = server.create_bin()
        # From the start of the empty bin: whenever the server subscribes the viewer, it gets
        # every request.
        url = f"{server.ws_url}/api/bins/{bin_['id']}/stream?after={'0' * 32}"
        small_buffer = ((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),)
        ws = websocket.create_connection(url, timeout=30, sockopt=small_buffer)
        # ~24 KB frames: enough of them to fill both sockets' buffers and the backlog.
        total = 600
        padding = [(f"X-Pad-{k}", "p" * 8000) for k in range(3)]

        def send(chunk: range) -> list[str]:
            out = []
            with httpx.Client(timeout=30) as client:
                for i in chunk:
                    r = client.post(f"{server.url}/h/{bin_['id']}/s{i}", headers=padding)
                    assert r.status_code == 200
                    out.append(r.json()["request_id"])
            return out

        with ThreadPoolExecutor(max_workers=4) as pool:
            ids = sorted(
                i for part in pool.map(send, [range(k, total, 4) for k in range(4)]) for i in part
            )  # ids sort in capture order

        seen = []
        while len(seen) < total:
            frame = json.loads(ws.recv())
            assert frame["request"]["headers"][-1] == ["X-Pad-2", "p" * 8000]
            seen.append(frame["request"]["id"])
        ws.close()
        assert seen == ids
    finally:
        server.stop()
