"""Live streams over websockets (flask-sock).

* ``/api/bins/<id>/stream[?after=ID]`` - one JSON text frame per captured request.
* ``/bins/<id>/live[?after=ID]`` - the same stream as HTML fragments for the htmx ws extension.

Both start with every request after ``after`` (when given) and continue with live ones; the hub's
per-viewer cursor guarantees no gap and no duplicate.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import Any

from flask import Flask, abort, render_template, request
from flask_sock import ConnectionClosed, Sock
from wsproto.events import TextMessage

from app.core import fastjson, lifecycle
from app.storage.ids import seq_from_id
from app.web.lookup import services, storage, verdicts_of
from app.web.serialize import public_request

log = logging.getLogger(__name__)

sock = Sock()

# Frames taken from a viewer's queue at once, and the bytes written with one call: a viewer
# catching up on a backlog still sees its first requests at once, and no write gets big.
_FRAMES_PER_WRITE = 64
_BYTES_PER_WRITE = 256 * 1024

_STREAM_PATH = re.compile(r"^/(?:api/bins/[^/]+/stream|bins/[^/]+/live)$")


def _check_stream_request() -> None:
    # flask-sock completes the websocket handshake before our handler runs; refuse unknown bins
    # and bad cursors here so the client gets a plain HTTP error instead of an open socket.
    if not _STREAM_PATH.match(request.path):
        return
    bin_id = (request.view_args or {}).get("bin_id", "")
    if storage().get_bin(bin_id) is None:
        abort(404)
    after = request.args.get("after")
    if after and seq_from_id(after) is None:
        abort(400)


class _WholeWrites:
    """A socket whose ``send`` writes everything, one writer at a time.

    simple-websocket 1.1.0 writes each frame with one ``socket.send()``, which writes only what
    fits into the socket buffer when the viewer reads slowly; the rest of the frame is dropped
    and the stream is corrupt from there on (simple-websocket issue #45, unfixed in any
    release). The lock keeps the pump's frames and the library's pings and close frames from
    interleaving.
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._lock = threading.Lock()

    def send(self, data: bytes) -> int:
        with self._lock:
            self._sock.sendall(data)
        return len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _send_frames(ws: Any, texts: list[str]) -> None:
    """Send each text as its own message, all of them in one write.

    ``simple_websocket.Base.send`` encodes one message and writes it; this does what it does
    for several messages (the same connection state, ``ws.ws``, and socket), so that a burst
    of captures costs one system call and one turn of the event loop rather than one per
    request. Only this pump sends data messages on the socket, so encoding order is write
    order, as a compressed (permessage-deflate) stream requires.
    """
    if not ws.connected:
        raise ConnectionClosed(ws.close_reason, ws.close_message)
    pending: list[bytes] = []
    size = 0
    for text in texts:
        data = ws.ws.send(TextMessage(data=text))
        pending.append(data)
        size += len(data)
        if size >= _BYTES_PER_WRITE:
            ws.sock.send(b"".join(pending))
            pending, size = [], 0
    if pending:
        ws.sock.send(b"".join(pending))


def _pump(ws: Any, bin_id: str, render: Callable[[dict[str, Any]], str]) -> None:
    ws.sock = _WholeWrites(ws.sock)
    hub = services().hub
    after = request.args.get("after")
    viewer = hub.subscribe(bin_id, seq_from_id(after) if after else None)
    try:
        while ws.connected:
            if lifecycle.draining():
                ws.close(reason=1012, message="server restarting")
                break
            items = viewer.take(timeout=1.0, limit=_FRAMES_PER_WRITE)
            if items:
                _send_frames(ws, [render(item) for item in items])
    except ConnectionClosed:
        pass
    finally:
        hub.unsubscribe(viewer)


def _checked(item: dict[str, Any]) -> dict[str, Any]:
    # Verdicts are computed at capture; this only re-checks one made under secrets that have
    # changed since.
    store = storage()
    bin_ = store.cached_bin(item["bin_id"])
    if bin_ is not None and item.get("signing_rev") != bin_["signing_rev"]:
        store.forget_bin(item["bin_id"])  # the cached copy may hold the old secrets
        bin_ = store.cached_bin(item["bin_id"])
        if bin_ is not None:
            verdicts_of(bin_, [item := dict(item)])
    return item


def _json_frame(item: dict[str, Any]) -> str:
    return fastjson.dumps({"type": "request", "request": public_request(_checked(item))})


def _html_frame(item: dict[str, Any]) -> str:
    return render_template("fragments/live_row.html", item=_checked(item), bin_id=item["bin_id"])


@sock.route("/api/bins/<bin_id>/stream")
def api_stream(ws: Any, bin_id: str) -> None:
    """JSON frames for programs."""
    _pump(ws, bin_id, _json_frame)


@sock.route("/bins/<bin_id>/live")
def page_stream(ws: Any, bin_id: str) -> None:
    """HTML fragments for the bin page."""
    _pump(ws, bin_id, _html_frame)


def init_app(app: Flask) -> None:
    """Register the websocket routes on ``app``."""
    sock.init_app(app)
    app.before_request(_check_stream_request)
