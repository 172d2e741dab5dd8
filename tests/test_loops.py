"""Forwarding can never loop, and a captured path can never climb out of a target's path.

A real ``hookbin serve``: a bin auto-forwards to its own capture URL reached through another
address (a TCP relay standing for a proxy or the host's own IP), which the target policy cannot
recognise as this server. The mark on Hookbin's own requests stops the loop after one round.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Server, start_server
from tests.echo import start_echo


class Relay:
    """Forwards every TCP connection on its own port to ``target_port`` (a proxy, in short)."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self._target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp_path = tmp_path_factory.mktemp("loops")
    srv = start_server(
        f"sqlite:///{tmp_path / 'hookbin.sqlite3'}",
        tmp_path,
        extra_env={"HOOKBIN_FORWARD_POLL_SECONDS": "0.2"},
    )
    yield srv
    srv.stop()


def _count(srv: Server, bin_id: str) -> int:
    return len(httpx.get(f"{srv.url}/api/bins/{bin_id}/requests").json()["items"])


def test_a_forward_to_this_server_by_another_address_does_not_loop(server: Server) -> None:
    relay = Relay(server.port)
    try:
        bin_ = server.create_bin()
        looping_target = f"http://127.0.0.1:{relay.port}/h/{bin_['id']}/again"
        patched = httpx.patch(
            f"{server.url}/api/bins/{bin_['id']}",
            json={"forward_url": looping_target, "auto_forward": True},
        )
        assert patched.status_code == 200, patched.text
        first = httpx.post(bin_["capture_url"] + "/start", content=b"{}")
        assert first.status_code == 200

        # The forward arrives once, through the relay, and is captured: then nothing more.
        deadline = time.monotonic() + 10
        while _count(server, bin_["id"]) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)  # several forward polls: a loop would have made many more by now
        items = httpx.get(f"{server.url}/api/bins/{bin_['id']}/requests").json()["items"]
        assert len(items) == 2, [i["path"] for i in items]
        came_back = items[0]
        assert came_back["path"] == "/again/start"
        via = [v for n, v in came_back["headers"] if n.lower() == "hookbin-via"]
        assert len(via) == 1 and via[0].startswith("hb-")
        # The first was forwarded (delivered to the relay); the one that came back was not queued.
        assert httpx.get(f"{server.url}/api/requests/{items[1]['id']}/forward").status_code == 200
        assert httpx.get(f"{server.url}/api/requests/{came_back['id']}/forward").status_code == 404
    finally:
        relay.close()


def test_another_deployment_forwards_what_this_one_sent(server: Server) -> None:
    """Only this deployment's own mark stops a forward: a chain of other Hookbins still works."""
    target = start_echo()
    try:
        bin_ = server.create_bin()
        httpx.patch(
            f"{server.url}/api/bins/{bin_['id']}",
            json={"forward_url": target.url + "/hook", "auto_forward": True},
        )
        sent = httpx.post(bin_["capture_url"], headers={"Hookbin-Via": "hb-someoneelse"})
        assert sent.status_code == 200
        (received,) = target.wait_for(1)
        via = [v for n, v in received.headers if n.lower() == "hookbin-via"]
        assert len(via) == 1
        assert via[0].startswith("hb-someoneelse, hb-")
    finally:
        target.close()


@pytest.mark.parametrize(
    "climbing",
    ["/../../admin/x", "/%2e%2e/%2e%2e/admin/x", "/..%2f..%2fadmin/x", "/a/../../../admin/x"],
)
def test_a_captured_path_cannot_climb_out_of_the_target_path(server: Server, climbing: str) -> None:
    target = start_echo()
    try:
        bin_ = server.create_bin()
        # Sent raw, so no client tidies the dot segments away before Hookbin sees them.
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(
                f"POST /h/{bin_['id']}{climbing} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Length: 2\r\nConnection: close\r\n\r\n{}".encode()
            )
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        (item,) = httpx.get(f"{server.url}/api/bins/{bin_['id']}/requests").json()["items"]
        assert item["path"] == climbing  # stored exactly as sent
        replayed = httpx.post(
            f"{server.url}/api/requests/{item['id']}/replay",
            json={"url": target.url + "/webhooks/stripe"},
        )
        assert replayed.status_code == 200, replayed.text
        (received,) = target.wait_for(1)
        assert received.path == "/webhooks/stripe/admin/x"
    finally:
        target.close()
