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
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from flask import Flask, Response, abort, current_app, render_template, request
from flask_sock import ConnectionClosed, Sock
from werkzeug.exceptions import MethodNotAllowed
from wsproto.events import TextMessage

from app.bins import paging
from app.core import fastjson, lifecycle
from app.core.invalid import Invalid
from app.storage.ids import seq_from_id
from app.web import auth
from app.web.lookup import services, storage, verdicts_of
from app.web.serialize import public_request

log = logging.getLogger(__name__)

sock = Sock()

# Frames taken from a viewer's queue at once, and the bytes written with one call: a viewer
# catching up on a backlog still sees its first requests at once, and no write gets big.
_FRAMES_PER_WRITE = 64
_BYTES_PER_WRITE = 256 * 1024

_STREAM_PATH = re.compile(r"^/(?:api/bins/(?P<api>[^/]+)/stream|bins/(?P<page>[^/]+)/live)$")
_WEBSOCKET_VERSION = "13"


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",")}


def handshake_problem(headers: Mapping[str, str]) -> str | None:
    """Why ``headers`` do not open a websocket (RFC 6455 4.2.1), or None when they do.

    These are the checks the websocket library makes once the route runs, where a failed one
    could only end in a ``500``.
    """
    if "upgrade" not in _tokens(headers.get("Connection", "")):
        return "not a websocket handshake: the Connection header must include Upgrade"
    if headers.get("Upgrade", "").strip().lower() != "websocket":
        return "not a websocket handshake: the Upgrade header must be websocket"
    version = headers.get("Sec-WebSocket-Version")
    if not version:
        return "not a websocket handshake: the Sec-WebSocket-Version header is missing"
    if version.strip() != _WEBSOCKET_VERSION:
        return f"unsupported websocket version; this server speaks {_WEBSOCKET_VERSION}"
    if not headers.get("Sec-WebSocket-Key"):
        return "not a websocket handshake: the Sec-WebSocket-Key header is missing"
    if not headers.get("Host"):
        return "not a websocket handshake: the Host header is missing"
    return None


def _refuse(message: str, *, json: bool, status: int = 400) -> NoReturn:
    if json:
        response = current_app.json.response({"error": message})
    else:
        response = Response(message + "\n", mimetype="text/plain")
    response.status_code = status
    # Which version to speak instead, the way RFC 6455 4.4 answers an unsupported one.
    response.headers["Sec-WebSocket-Version"] = _WEBSOCKET_VERSION
    abort(response)


def _check_stream_request() -> None:
    # flask-sock completes the websocket handshake before our handler runs, and fails with a
    # 500 on an incomplete one; refuse those, unknown bins and bad cursors here so the client
    # gets a plain HTTP error instead (JSON under /api) rather than an open socket.
    match = _STREAM_PATH.match(request.path)
    if not match or isinstance(request.routing_exception, MethodNotAllowed):
        return
    json = match["api"] is not None
    problem = handshake_problem(request.headers)
    if problem is not None:
        _refuse(problem, json=json)
    if auth.cross_site():
        # A page of another site may open a socket with this browser's cookie: never.
        _refuse("this stream is not for other sites' pages", json=json, status=403)
    bin_ = storage().get_bin(match["api"] or match["page"])
    grant = auth.grant_of(bin_, auth.credentials(query_token=True))
    if grant < auth.Grant.READ:
        auth.refuse(grant, auth.Grant.READ, json=json)
    if bin_ is None:
        abort(404)  # JSON under /api, the not-found page elsewhere
    try:
        paging.cursor(request.args.get("after"), "after")
    except Invalid as exc:
        _refuse(str(exc), json=json)


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
