"""The websocket stream of a bin, as ``hookbin listen`` reads it: frames on a queue, read by a
thread of its own so that pings are answered while the main thread waits for a slow target."""

from __future__ import annotations

import contextlib
import queue
import struct
import threading
import urllib.parse
from typing import Any, Protocol

import websocket

from app.cli.listen_output import printable
from app.cli.listen_urls import quoted, server_base

#: Seconds allowed for the websocket handshake.
CONNECT_TIMEOUT = 15.0

#: The server pings every 20 s; this long without a byte from it means the connection is dead
#: (typically after the laptop slept) even if the socket has not noticed yet.
IDLE_TIMEOUT = 60.0


def stream_url(server: str, bin_id: str, after: str | None = None) -> str:
    """The websocket URL of a bin's JSON stream (``ws://`` for http, ``wss://`` for https)."""
    base = server_base(server)
    scheme = "wss" if base.startswith("https:") else "ws"
    url = f"{scheme}:{base.split(':', 1)[1]}/api/bins/{quoted(bin_id)}/stream"
    return url + (f"?after={urllib.parse.quote(after, safe='')}" if after else "")


class WebSocketLike(Protocol):
    """The part of ``websocket.WebSocket`` the listener uses."""

    def recv_data(self, control_frame: bool = False) -> tuple[int, Any]: ...

    def abort(self) -> None: ...

    def shutdown(self) -> None: ...


def connect_websocket(url: str, token: str | None = None) -> WebSocketLike:
    """Open the stream (with the bin's ``token``); pings are answered by ``recv_data``."""
    header = [f"Authorization: Bearer {token}"] if token else None
    ws = websocket.create_connection(url, timeout=CONNECT_TIMEOUT, header=header)
    ws.settimeout(IDLE_TIMEOUT)
    return ws


class Lost:
    """The connection is gone, and why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class Stream:
    """An open stream: ``next`` hands out its text frames, then a ``Lost``."""

    def __init__(self, ws: WebSocketLike) -> None:
        self._ws = ws
        self._frames: queue.Queue[str | Lost] = queue.Queue()
        self._closing = False
        self._thread = threading.Thread(target=self._read, name="hookbin-listen", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while True:
                opcode, data = self._ws.recv_data()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    self._frames.put(Lost(close_reason(data)))
                    return
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    self._frames.put(data.decode("utf-8") if isinstance(data, bytes) else data)
        except websocket.WebSocketTimeoutException:
            self._frames.put(Lost(f"nothing from the server for {IDLE_TIMEOUT:g} s"))
        except Exception as exc:  # any failure ends this connection, not the run
            reason = "closed" if self._closing else str(exc) or type(exc).__name__
            self._frames.put(Lost(reason))

    def next(self, timeout: float) -> str | Lost | None:
        """The next text frame, a Lost once the connection is gone, or None on timeout."""
        try:
            return self._frames.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        """Drop the connection and stop the reader thread."""
        # No close handshake: it would need the socket the reader thread is reading from. The
        # server takes a dropped connection as the end of the stream, and there is nothing to
        # flush (the listener never sends anything).
        self._closing = True
        with contextlib.suppress(Exception):  # best effort: the socket may already be gone
            self._ws.abort()  # wakes the reader
        self._thread.join(timeout=5)
        self._ws.shutdown()


def close_reason(data: bytes) -> str:
    """What a close frame says, for people: its code and message."""
    if len(data) >= 2:
        code = struct.unpack("!H", data[:2])[0]
        message = printable(data[2:].decode("utf-8", "replace"))
        return f"the server closed the stream ({code}{' ' + message if message else ''})"
    return "the server closed the stream"
