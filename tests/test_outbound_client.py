"""The outbound client against a real raw-socket server that records the exact request bytes."""

from __future__ import annotations

import gzip
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from app.delivery.client import final_url, replay_headers, send
from app.delivery.policy import TargetPolicy, VettedTarget, vet_target

Handler = Callable[[socket.socket, "Received"], None]


@dataclass
class Received:
    """One request as it arrived on the wire."""

    raw: bytes
    request_line: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def _read_request(conn: socket.socket) -> Received | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]
    length = next((int(v) for n, v in headers if n.lower() == "content-length"), 0)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return Received(
        raw=head + b"\r\n\r\n" + body, request_line=lines[0], headers=headers, body=body
    )


def respond(
    status: str = "200 OK",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"ok",
) -> Handler:
    """A handler that answers with a fixed response and closes the connection."""

    def handle(conn: socket.socket, _request: Received) -> None:
        lines = [f"HTTP/1.1 {status}"]
        lines += [f"{n}: {v}" for n, v in headers or []]
        lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
        conn.sendall("\r\n".join(lines).encode("latin-1") + body)

    return handle


class RawServer:
    """A tiny HTTP/1.1 server on a real socket; ``handler`` writes the answer byte by byte."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        family: socket.AddressFamily = socket.AF_INET,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.handler: Handler = respond()
        self.received: list[Received] = []
        self.stop = threading.Event()
        self.tls = tls
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            request = _read_request(conn)
            if request is not None:
                self.received.append(request)
                self.handler(conn, request)
        except (OSError, ssl.SSLError):
            pass  # the client hung up early (truncation, timeouts): expected in some tests
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture
def server() -> Iterator[RawServer]:
    srv = RawServer()
    yield srv
    srv.close()


def target_for(url: str, **policy) -> VettedTarget:
    return vet_target(url, TargetPolicy(**policy))


def fake_resolver(name: str, address: str):
    def resolve(host, port, family=0, type=0, proto=0, flags=0):
        if host != name:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    return resolve


def go(target: VettedTarget, suffix: str = "/", headers=(), body: bytes = b"", **kw):
    kw.setdefault("timeout", 5.0)
    kw.setdefault("max_response_bytes", 1 << 20)
    return send(kw.pop("method", "POST"), target, suffix, list(headers), body, **kw)


# --- what goes out ---------------------------------------------------------------------------


def test_propfind_with_sub_path_and_query(server: RawServer) -> None:
    target = target_for(f"http://127.0.0.1:{server.port}/base?k=v")
    result = go(target, "/sub/path?x=1&x=2", method="PROPFIND")
    assert result.error is None
    assert result.status == 200
    assert result.body == b"ok"
    assert result.http_version == "HTTP/1.1"
    assert server.received[0].request_line == "PROPFIND /base/sub/path?k=v&x=1&x=2 HTTP/1.1"


def test_exact_headers_and_binary_body(server: RawServer) -> None:
    body = bytes(range(256)) + b"\x00\xff\r\n\r\n\x00" * 50
    captured = [
        ("X-Rep", "1"),
        ("Host", "evil.example"),
        ("Content-Length", "999"),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "keep-alive, X-Secret"),
        ("X-Secret", "listed in Connection"),
        ("Keep-Alive", "timeout=5"),
        ("X-Rep", "2"),
        ("Bad Header", "space in name"),
        ("X-CaSe", "  Value with spaces inside  "),
        ("Upgrade", "websocket"),
        ("TE", "trailers"),
        ("Proxy-Authorization", "Basic eDp5"),
        ("X-Rep", "3"),
        ("Content-Type", "application/octet-stream"),
    ]
    target = target_for(f"http://127.0.0.1:{server.port}/")
    result = go(target, "/", captured, body)
    assert result.error is None

    got = server.received[0]
    assert got.body == body
    # Exactly these, in this order: no Accept, Accept-Encoding, Connection or User-Agent
    # invented by httpx, nothing hop-by-hop, the target's Host, a fresh Content-Length.
    assert got.headers == [
        ("Host", f"127.0.0.1:{server.port}"),
        ("X-Rep", "1"),
        ("X-Rep", "2"),
        ("X-CaSe", "Value with spaces inside"),
        ("X-Rep", "3"),
        ("Content-Type", "application/octet-stream"),
        ("Content-Length", str(len(body))),
    ]
    assert b"chunked" not in got.raw.split(b"\r\n\r\n")[0]


def test_captured_client_headers_are_kept_verbatim(server: RawServer) -> None:
    captured = [("User-Agent", "Stripe/1.0"), ("accept", "*/*"), ("Accept-Encoding", "gzip")]
    result = go(target_for(f"http://127.0.0.1:{server.port}/"), "/", captured, method="GET")
    assert result.status == 200
    assert server.received[0].headers == [("Host", f"127.0.0.1:{server.port}"), *captured]


def test_no_user_agent_added(server: RawServer) -> None:
    go(target_for(f"http://127.0.0.1:{server.port}/"), "/", [("X-A", "b")], method="GET")
    names = [name.lower() for name, _ in server.received[0].headers]
    assert names == ["host", "x-a"]  # a GET without body: no Content-Length either


def test_empty_body_keeps_framing_when_captured_with_one(server: RawServer) -> None:
    target = target_for(f"http://127.0.0.1:{server.port}/")
    go(target, "/", [("Content-Length", "0")], b"")
    assert server.received[0].headers[-1] == ("Content-Length", "0")


def test_connects_to_vetted_address_with_original_host(server: RawServer) -> None:
    resolve = fake_resolver("hooks.internal.test", "127.0.0.1")
    target = vet_target(f"http://hooks.internal.test:{server.port}/in", TargetPolicy(), resolve)
    result = go(target, "/x", [("Host", "ignored.example")])
    assert result.status == 200
    assert server.received[0].headers[0] == ("Host", f"hooks.internal.test:{server.port}")
    assert server.received[0].request_line == "POST /in/x HTTP/1.1"


def test_ipv6_address_is_bracketed() -> None:
    try:
        srv = RawServer("::1", socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        result = go(target_for(f"http://[::1]:{srv.port}/v6"), "/a?b=c", method="GET")
        assert result.error is None
        assert result.status == 200
        assert srv.received[0].request_line == "GET /v6/a?b=c HTTP/1.1"
        assert srv.received[0].headers[0] == ("Host", f"[::1]:{srv.port}")
    finally:
        srv.close()


def test_loop_through_captured_sub_path_is_refused(server: RawServer) -> None:
    # The target itself (the server's root) passed, but appending the captured sub-path
    # "/h/abc" would reach this server's own capture URL.
    target = target_for(f"http://127.0.0.1:{server.port}/", own_ports=(server.port,))
    assert target.refused_path_prefix == "/h/"
    result = go(target, "/h/abc")
    assert result.status is None
    assert "own capture URLs" in (result.error or "")
    assert server.received == []
    assert go(target, "/api/abc").status == 200


def test_invalid_method_is_an_error_not_an_exception(server: RawServer) -> None:
    result = go(target_for(f"http://127.0.0.1:{server.port}/"), method="GET /x HTTP/1.1\r\n")
    assert result.status is None
    assert "not a valid HTTP method" in (result.error or "")
    assert server.received == []


# --- what comes back -------------------------------------------------------------------------


def test_redirect_is_returned_not_followed(server: RawServer) -> None:
    server.handler = respond("302 Found", [("Location", "/elsewhere")], b"")
    result = go(target_for(f"http://127.0.0.1:{server.port}/"), method="GET")
    assert result.status == 302
    assert ("Location", "/elsewhere") in result.headers
    # The target records a request before answering it, and a followed redirect is answered
    # before the client returns: a second request would be here already.
    assert len(server.received) == 1


def test_response_headers_keep_case_order_and_repeats(server: RawServer) -> None:
    server.handler = respond(
        "201 Created", [("X-Dup", "a"), ("set-cookie", "s=1"), ("X-Dup", "b")], b"{}"
    )
    result = go(target_for(f"http://127.0.0.1:{server.port}/"))
    assert result.status == 201
    assert result.headers[:3] == [("X-Dup", "a"), ("set-cookie", "s=1"), ("X-Dup", "b")]


def test_big_answer_is_truncated_at_the_cap(server: RawServer) -> None:
    big = bytes(range(256)) * 8192  # 2 MiB
    server.handler = respond(body=big)
    result = go(target_for(f"http://127.0.0.1:{server.port}/"), max_response_bytes=1000)
    assert result.status == 200
    assert result.truncated is True
    assert result.body_size == 1000
    assert result.body == big[:1000]
    assert result.error is None


def test_answer_exactly_at_the_cap_is_not_truncated(server: RawServer) -> None:
    server.handler = respond(body=b"x" * 1000)
    result = go(target_for(f"http://127.0.0.1:{server.port}/"), max_response_bytes=1000)
    assert (result.truncated, result.body_size, len(result.body)) == (False, 1000, 1000)


def test_gzip_answer_is_returned_raw(server: RawServer) -> None:
    plain = b"hello hookbin " * 10000
    packed = gzip.compress(plain)
    server.handler = respond(headers=[("Content-Encoding", "gzip")], body=packed)
    result = go(target_for(f"http://127.0.0.1:{server.port}/"), max_response_bytes=len(packed))
    assert result.body == packed  # not inflated
    assert result.truncated is False
    assert gzip.decompress(result.body) == plain


def test_head_answer(server: RawServer) -> None:
    def handle(conn: socket.socket, _request: Received) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 12345\r\nConnection: close\r\n\r\n")

    server.handler = handle
    result = go(target_for(f"http://127.0.0.1:{server.port}/"), method="HEAD")
    assert (result.status, result.body, result.error) == (200, b"", None)


# --- failures are results, not exceptions ----------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused() -> None:
    port = _closed_port()
    result = go(target_for(f"http://127.0.0.1:{port}/"))
    assert result.status is None
    assert result.error == f"connection refused by 127.0.0.1:{port}"
    assert result.elapsed_ms >= 0


def test_connection_refused_names_host_and_address() -> None:
    port = _closed_port()
    resolve = fake_resolver("dev.test", "127.0.0.1")
    target = vet_target(f"http://dev.test:{port}/", TargetPolicy(), resolve)
    assert go(target).error == f"connection refused by dev.test:{port} (127.0.0.1)"


def test_slow_server_times_out(server: RawServer) -> None:
    server.handler = lambda conn, request: server.stop.wait(5)
    started = time.perf_counter()
    result = go(target_for(f"http://127.0.0.1:{server.port}/"), timeout=0.3)
    assert time.perf_counter() - started < 3
    assert result.status is None
    assert (result.error or "").startswith("timed out after 0.3 s")
    assert 250 < result.elapsed_ms < 3000


def test_trickling_server_hits_the_overall_deadline(server: RawServer) -> None:
    def handle(conn: socket.socket, _request: Received) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        for _ in range(100):  # one byte every 0.1 s never trips the per-read timeout
            if server.stop.wait(0.1):
                return
            conn.sendall(b"x")

    server.handler = handle
    result = go(target_for(f"http://127.0.0.1:{server.port}/"), timeout=0.5)
    assert result.status == 200
    assert "timed out after 0.5 s while reading" in (result.error or "")
    assert 0 < result.body_size < 100
    assert result.elapsed_ms < 3000


def test_server_closing_without_answer(server: RawServer) -> None:
    server.handler = lambda conn, request: None
    result = go(target_for(f"http://127.0.0.1:{server.port}/"))
    assert result.status is None
    assert "did not answer with valid HTTP" in (result.error or "")


# --- TLS: SNI and certificate checks use the URL's name, not the address ---------------------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory) -> Iterator[tuple[RawServer, list[str | None]]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"),
            "-subj", "/CN=hook-tls.test", "-addext", "subjectAltName=DNS:hook-tls.test",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(d / "cert.pem", d / "key.pem")
    names: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    srv = RawServer(tls=context)
    yield srv, names
    srv.close()


def test_https_sends_sni_and_host_of_the_url(tls_server) -> None:
    srv, names = tls_server
    resolve = fake_resolver("hook-tls.test", "127.0.0.1")
    target = vet_target(f"https://hook-tls.test:{srv.port}/t", TargetPolicy(), resolve)
    result = go(target, "/x", verify_tls=False)
    assert result.error is None
    assert result.status == 200
    assert names[-1] == "hook-tls.test"
    assert srv.received[-1].headers[0] == ("Host", f"hook-tls.test:{srv.port}")


def test_https_untrusted_certificate_is_an_error(tls_server) -> None:
    srv, _ = tls_server
    resolve = fake_resolver("hook-tls.test", "127.0.0.1")
    target = vet_target(f"https://hook-tls.test:{srv.port}/", TargetPolicy(), resolve)
    result = go(target)
    assert result.status is None
    assert "TLS certificate of hook-tls.test could not be verified" in (result.error or "")


# --- pure helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "suffix", "expected"),
    [
        ("http://t.example/", "/", "http://t.example/"),
        ("http://t.example/", "", "http://t.example/"),
        ("http://t.example/api", "/", "http://t.example/api"),
        ("http://t.example/api/", "/", "http://t.example/api/"),
        ("http://t.example/api", "/a/b", "http://t.example/api/a/b"),
        ("http://t.example/api/", "/a/b/", "http://t.example/api/a/b/"),
        ("http://t.example/api/", "a", "http://t.example/api/a"),
        ("http://t.example/api?k=v", "/a?x=1", "http://t.example/api/a?k=v&x=1"),
        ("http://t.example/api?k=v", "/a", "http://t.example/api/a?k=v"),
        ("http://t.example/api", "/?x=1&x=2", "http://t.example/api?x=1&x=2"),
        ("http://t.example/api", "/a?", "http://t.example/api/a"),
        ("http://t.example/api#frag", "/a", "http://t.example/api/a"),
        # escapes survive as sent; characters that are not allowed get escaped
        ("http://t.example/", "/a%2Fb%20c?q=%26x", "http://t.example/a%2Fb%20c?q=%26x"),
        ("http://t.example/", "/a b#c?d e#f", "http://t.example/a%20b%23c?d%20e%23f"),
        ("http://t.example/", "/caf\u00e9", "http://t.example/caf%E9"),  # latin-1 = wire bytes
        ("http://t.example/", "/\u20ac", "http://t.example/%E2%82%AC"),
        # a captured sub-path never climbs above the target's own path, however it is spelled
        ("http://t/webhooks/stripe", "/../../admin/x", "http://t/webhooks/stripe/admin/x"),
        ("http://t/webhooks/stripe", "/a/../../../b", "http://t/webhooks/stripe/b"),
        ("http://t/webhooks/stripe", "/%2e%2e/%2E%2E/admin", "http://t/webhooks/stripe/admin"),
        ("http://t/webhooks/stripe", "/..%2f..%2fadmin", "http://t/webhooks/stripe/admin"),
        ("http://t/webhooks/stripe", "/..%5c..%5cadmin", "http://t/webhooks/stripe/admin"),
        ("http://t/webhooks/stripe", "/x/./y/.", "http://t/webhooks/stripe/x/y"),
        ("http://t/webhooks/stripe", "/a%2Fb/...", "http://t/webhooks/stripe/a%2Fb/..."),
    ],
)
def test_final_url(base: str, suffix: str, expected: str) -> None:
    assert str(final_url(httpx.URL(base), suffix)) == expected


def test_replay_headers() -> None:
    captured = [
        ("connection", "Upgrade, X-Hop"),
        ("X-Hop", "1"),
        ("X-Keep", "a"),
        ("Proxy-Connection", "keep-alive"),
        ("Trailer", "X-T"),
        ("Trailers", "x"),
        ("proxy-authenticate", "x"),
        ("X-Keep", "b"),
        ("X(bad)", "1"),
        ("", "empty name"),
        ("X-Ctl", "a\r\nInjected: 1"),
        ("x-lower", "kept as is"),
        ("HOST", "h"),
        ("content-length", "1"),
    ]
    assert replay_headers(captured) == [
        ("X-Keep", "a"),
        ("X-Keep", "b"),
        ("x-lower", "kept as is"),
    ]
