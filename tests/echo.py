"""A small local target server for replay and forward tests: records what it receives."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    """One request as the target saw it."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class EchoTarget:
    """A running target; ``received`` fills up as requests arrive."""

    server: ThreadingHTTPServer
    received: list[Received] = field(default_factory=list)
    status: int = 201
    extra_headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None
    delay: float = 0.0
    #: When set, each request is held (after being recorded) until this event is set.
    hold: threading.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.received)

    def close(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self.server.shutdown()
        self.server.server_close()


def start_echo() -> EchoTarget:
    """Start a target on a free port answering ``status`` with a JSON echo of the request."""
    target: EchoTarget

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            target.received.append(
                Received(self.command, self.path, list(self.headers.items()), body)
            )
            if target.delay:
                time.sleep(target.delay)
            if target.hold is not None:
                target.hold.wait(30)
            answer = target.body
            if answer is None:
                answer = json.dumps(
                    {"method": self.command, "path": self.path, "body_size": len(body)}
                ).encode()
            self.send_response(target.status)
            for name, value in [("Content-Type", "application/json"), *target.extra_headers]:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_PROPFIND = _handle  # noqa: N815

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    target = EchoTarget(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return target
