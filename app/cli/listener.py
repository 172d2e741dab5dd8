"""``hookbin listen``: follow a bin on a Hookbin server and forward each request to a local URL.

Runs on a developer's machine, against a Hookbin server running elsewhere:

* the bin's websocket stream (``/api/bins/<id>/stream?after=ID``) says which requests arrive;
* the exact body comes from ``/api/requests/<id>/body``;
* the request goes to the local target exactly as a server-side replay would send it (same
  method, sub-path and raw query appended to the target URL, same header filtering, exact body
  bytes), through the very same client code;
* the local answer is reported back (``POST /api/requests/<id>/attempts``, kind ``listen``) so
  that it shows on the bin page.

A request counts as handled once it has been forwarded *and* reported. The id of the last handled
request is the resume cursor: after any disconnect the stream is reopened with ``after=<that id>``
(the server then sends everything after it, with no gap and no duplicate), and the cursor is also
kept in a small state file so that the next ``hookbin listen`` carries on where this one stopped.
A request that was forwarded but whose answer could not be reported yet is not given up: the
report is retried until the server takes it, so the local target does not see it twice. (Only
a listener stopped between forwarding a request and saving its position sends it again.)
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import re
import struct
import tempfile
import threading
import time
import unicodedata
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import click
import httpx
import websocket

from app.delivery.client import OutboundResult, final_url, send
from app.delivery.policy import DEFAULT_PORTS, VettedTarget, is_capture_path
from app.delivery.replay import suffix_of
from app.storage.ids import seq_from_id

#: The cursor that means "before the first request": the stream then starts at the beginning.
ZERO_ID = "0" * 32

#: First pause before reconnecting; it doubles on each failed attempt, up to BACKOFF_MAX.
BACKOFF_START = 0.5
BACKOFF_MAX = 10.0

#: Bytes of the local answer kept and reported. The API takes JSON bodies up to 1 MiB, and the
#: body travels base64-encoded (4/3 larger) next to the headers.
REPORT_MAX_BODY = 512 * 1024

#: Seconds allowed for the websocket handshake.
CONNECT_TIMEOUT = 15.0

#: The server pings every 20 s; this long without a byte from it means the connection is dead
#: (typically after the laptop slept) even if the socket has not noticed yet.
IDLE_TIMEOUT = 60.0

#: Seconds allowed for each step of a call to the Hookbin API (body download, report).
API_TIMEOUT = 30.0

Start = Literal["saved", "now", "start"]


class ListenError(Exception):
    """A reason to stop, with the exit code the command ends with."""

    exit_code = 1


class Refused(ListenError):
    """The server answered, and said no (unknown bin, bad cursor, ...): retrying will not help."""

    exit_code = 2


class Unreachable(ListenError):
    """The server could not be reached, or failed: worth retrying once we are running."""

    exit_code = 1


class _ServerTrouble(Exception):
    """Talking to the server failed while handling a request: reconnect and take it again."""


class StateError(Exception):
    """The state file exists but cannot be used."""


# --- small pieces -------------------------------------------------------------------------------


def server_base(url: str) -> str:
    """The server URL without a trailing slash; ValueError when it is not an http(s) URL."""
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    if parsed.query or parsed.fragment:
        raise ValueError(f"{url!r} must not have a query or fragment")
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, parsed.path.rstrip("/"), "", ""))


def _quoted(bin_id: str) -> str:
    return urllib.parse.quote(bin_id, safe="")


def stream_url(server: str, bin_id: str, after: str | None = None) -> str:
    """The websocket URL of a bin's JSON stream (``ws://`` for http, ``wss://`` for https)."""
    base = server_base(server)
    scheme = "wss" if base.startswith("https:") else "ws"
    url = f"{scheme}:{base.split(':', 1)[1]}/api/bins/{_quoted(bin_id)}/stream"
    return url + (f"?after={urllib.parse.quote(after, safe='')}" if after else "")


def local_target(url: str) -> VettedTarget:
    """The ``--forward-to`` URL as the outbound client takes it; ValueError when unusable.

    No target policy applies here: the target is the developer's own machine. The "address" is
    the host name itself, so the name is resolved the ordinary way (``localhost`` reaches
    whichever of ``::1`` and ``127.0.0.1`` the local server listens on).
    """
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise ValueError(f"{url!r} is not a valid URL: {exc}") from None
    if parsed.scheme not in DEFAULT_PORTS:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    host = parsed.raw_host.decode("ascii")
    if not host:
        raise ValueError(f"{url!r} has no host")
    port = parsed.port if parsed.port is not None else DEFAULT_PORTS[parsed.scheme]
    return VettedTarget(url=parsed, host=host, port=port, address=host, scheme=parsed.scheme)


def forwards_into_capture(forward_to: str, server: str) -> bool:
    """True when ``forward_to`` is a capture URL of ``server`` itself (an endless loop)."""
    target = urllib.parse.urlsplit(forward_to.strip())
    base = urllib.parse.urlsplit(server_base(server))
    same_origin = (target.scheme, target.netloc.lower()) == (base.scheme, base.netloc.lower())
    return same_origin and is_capture_path(target.path, base.path + "/h/")


def local_url(forward_to: str, item: Mapping[str, Any]) -> str:
    """Where request ``item`` goes: the target URL plus its sub-path and raw query.

    Built exactly as a server-side replay builds it (the same ``suffix_of`` and ``final_url``).
    """
    return str(final_url(httpx.URL(forward_to), suffix_of(dict(item))))


def default_state_path(bin_id: str, environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/hookbin/listen-<bin>.json``, or under ``~/.local/state`` without it."""
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_STATE_HOME", "")
    root = (
        Path(xdg)
        if os.path.isabs(xdg)
        else Path(env.get("HOME") or Path.home()) / ".local" / "state"
    )
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", bin_id) or "_"
    return root / "hookbin" / f"listen-{safe}.json"


def load_state(path: Path, bin_id: str) -> str | None:
    """The saved cursor for ``bin_id``; None when there is no state file.

    Raises StateError when the file exists but is unreadable, malformed, or about another bin
    (sequence numbers are shared by all bins, so another bin's cursor would skip or repeat).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise StateError(f"{path} is not valid JSON") from None
    if not isinstance(data, dict):
        raise StateError(f"{path} is not a listen state file")
    if data.get("bin_id") != bin_id:
        raise StateError(f"{path} belongs to bin {data.get('bin_id')!r}, not {bin_id!r}")
    after = data.get("after")
    if not isinstance(after, str) or seq_from_id(after) is None:
        raise StateError(f"{path} holds no valid request id")
    return after.lower()


def save_state(path: Path, bin_id: str, server: str, after: str) -> None:
    """Write the cursor atomically: a temporary file in the same directory, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "bin_id": bin_id,
        "server": server,
        "after": after,
        "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def printable(text: str) -> str:
    """``text`` with control and other invisible characters escaped (it comes from strangers,
    and a raw ESC in a terminal is a command)."""
    out = []
    for char in text:
        if unicodedata.category(char)[0] in "CZ" and char != " ":
            out.append(f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)


def status_colour(status: int | None) -> str:
    """green for 2xx, yellow for 1xx, 3xx and 4xx, red for 5xx and for no answer at all."""
    if status is None or status >= 500:
        return "red"
    if 200 <= status < 300:
        return "green"
    return "yellow"


def format_line(when: datetime, item: Mapping[str, Any], result: OutboundResult) -> str:
    """``12:03:04  POST  /stripe/webhook?x=1  -> 200  12 ms``, the outcome coloured."""
    head = f"{when:%H:%M:%S}  {printable(item['method'])}  {printable(suffix_of(dict(item)))}"
    elapsed = f"{result.elapsed_ms:.0f} ms"
    if result.status is None:
        outcome = click.style(f"error: {printable(result.error or 'no answer')}", fg="red")
        return f"{head}  -> {outcome}  {elapsed}"
    line = f"{head}  -> {click.style(str(result.status), fg=status_colour(result.status))}"
    line += f"  {elapsed}"
    if result.error:  # an answer that was cut short
        line += "  " + click.style(f"({printable(result.error)})", fg="yellow")
    return line


# --- the websocket ------------------------------------------------------------------------------


class WebSocketLike(Protocol):
    """The part of ``websocket.WebSocket`` the listener uses."""

    def recv_data(self, control_frame: bool = False) -> tuple[int, Any]: ...

    def abort(self) -> None: ...

    def shutdown(self) -> None: ...


def connect_websocket(url: str) -> WebSocketLike:
    """Open the stream; pings are answered by ``recv_data`` in the reader thread."""
    ws = websocket.create_connection(url, timeout=CONNECT_TIMEOUT)
    ws.settimeout(IDLE_TIMEOUT)
    return ws


class _Lost:
    def __init__(self, reason: str) -> None:
        self.reason = reason


class _Stream:
    """An open stream, read by its own thread so that pings are answered even while the main
    thread waits for a slow local target."""

    def __init__(self, ws: WebSocketLike) -> None:
        self._ws = ws
        self._frames: queue.Queue[str | _Lost] = queue.Queue()
        self._closing = False
        self._thread = threading.Thread(target=self._read, name="hookbin-listen", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while True:
                opcode, data = self._ws.recv_data()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    self._frames.put(_Lost(_close_reason(data)))
                    return
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    self._frames.put(data.decode("utf-8") if isinstance(data, bytes) else data)
        except websocket.WebSocketTimeoutException:
            self._frames.put(_Lost(f"nothing from the server for {IDLE_TIMEOUT:g} s"))
        except Exception as exc:  # any failure ends this connection, not the run
            reason = "closed" if self._closing else str(exc) or type(exc).__name__
            self._frames.put(_Lost(reason))

    def next(self, timeout: float) -> str | _Lost | None:
        """The next text frame, a _Lost once the connection is gone, or None on timeout."""
        try:
            return self._frames.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        # No close handshake: it would need the socket the reader thread is reading from. The
        # server takes a dropped connection as the end of the stream, and there is nothing to
        # flush (the listener never sends anything).
        self._closing = True
        with contextlib.suppress(Exception):  # best effort: the socket may already be gone
            self._ws.abort()  # wakes the reader
        self._thread.join(timeout=5)
        self._ws.shutdown()


def _close_reason(data: bytes) -> str:
    if len(data) >= 2:
        code = struct.unpack("!H", data[:2])[0]
        message = printable(data[2:].decode("utf-8", "replace"))
        return f"the server closed the stream ({code}{' ' + message if message else ''})"
    return "the server closed the stream"


# --- the listener -------------------------------------------------------------------------------


def _api_error(response: httpx.Response) -> str:
    try:
        message = response.json().get("error")
    except (ValueError, AttributeError):
        message = None
    text = f"HTTP {response.status_code}"
    return f"{text}: {message}" if isinstance(message, str) else text


class Listener:
    """Follows one bin and forwards its requests; ``run()`` returns the exit code.

    Everything that touches the outside can be replaced for tests: ``echo`` (click.echo-like:
    ``echo(text)`` and ``echo(text, err=True)``), ``clock`` (local time shown on each line),
    ``sleep``, ``connect`` (opens the websocket) and ``api`` (an httpx client for the server).
    """

    def __init__(
        self,
        server: str,
        bin_id: str,
        forward_to: str,
        *,
        state_path: Path | None = None,
        start: Start = "saved",
        timeout: float = 10.0,
        verify_tls: bool = True,
        echo: Callable[..., None] = click.echo,
        clock: Callable[[], datetime] = datetime.now,
        sleep: Callable[[float], None] = time.sleep,
        connect: Callable[[str], WebSocketLike] = connect_websocket,
        api: httpx.Client | None = None,
    ) -> None:
        self.server = server_base(server)
        self.bin_id = bin_id
        self.forward_to = forward_to
        self.target = local_target(forward_to)
        self.state_path = state_path or default_state_path(bin_id)
        self.start = start
        self.timeout = timeout
        self.verify_tls = verify_tls
        self.echo = echo
        self.clock = clock
        self.sleep = sleep
        self.connect = connect
        self.api = api or httpx.Client(timeout=API_TIMEOUT, follow_redirects=False)
        #: Id of the last request handled (forwarded and reported), or the starting point.
        self.last_id = ZERO_ID
        self._save_failed = False

    # -- running --

    def run(self) -> int:
        """Follow the bin until Ctrl-C (0), a refusal (2) or an unreachable server at start (1)."""
        stream: _Stream | None = None
        try:
            try:
                capture_url = self._check_bin()
                self.last_id = self._starting_point()
                self._save()
                stream = self._open()
            except ListenError as exc:
                self.echo(f"hookbin listen: {exc}", err=True)
                return exc.exit_code
            self.echo(f"Ready. Forwarding {capture_url} -> {self.forward_to} (Ctrl-C to stop)")
            while True:
                reason = self._follow(stream)
                stream.close()
                stream = None
                stream = self._reconnect(reason)
                self.echo(f"reconnected, resuming after {self.last_id}")
        except Refused as exc:
            self.echo(f"hookbin listen: {exc}", err=True)
            return exc.exit_code
        except KeyboardInterrupt:
            self.echo("stopped")
            return 0
        finally:
            if stream is not None:
                stream.close()
            self.api.close()

    def _check_bin(self) -> str:
        """The bin's capture URL; Refused or Unreachable when the server says no or is away."""
        url = f"{self.server}/api/bins/{_quoted(self.bin_id)}"
        try:
            response = self.api.get(url)
        except httpx.HTTPError as exc:
            raise Unreachable(f"cannot reach the Hookbin server at {self.server}: {exc}") from None
        if response.status_code == 404:
            raise Refused(f"there is no bin {self.bin_id!r} on {self.server}")
        if response.status_code >= 500:
            raise Unreachable(f"the Hookbin server at {self.server} failed: {_api_error(response)}")
        if response.status_code != 200:
            raise Refused(f"{self.server} refused bin {self.bin_id!r}: {_api_error(response)}")
        try:
            return str(response.json()["capture_url"])
        except (ValueError, KeyError, TypeError):
            raise Refused(f"{self.server} does not look like a Hookbin server") from None

    def _starting_point(self) -> str:
        if self.start == "start":
            self.echo("Forwarding every request the bin holds, oldest first.")
            return ZERO_ID
        if self.start == "saved":
            try:
                saved = load_state(self.state_path, self.bin_id)
            except StateError as exc:
                self.echo(f"warning: ignoring saved position: {exc}", err=True)
                saved = None
            if saved is not None:
                where = "the start of the bin" if saved == ZERO_ID else f"request {saved}"
                self.echo(f"Resuming after {where} (saved in {self.state_path}).")
                return saved
        return self._newest_id()

    def _newest_id(self) -> str:
        """The newest request of the bin (so that only later ones are forwarded), or ZERO_ID."""
        url = f"{self.server}/api/bins/{_quoted(self.bin_id)}/requests"
        try:
            response = self.api.get(url, params={"limit": 1})
        except httpx.HTTPError as exc:
            raise Unreachable(f"cannot reach the Hookbin server at {self.server}: {exc}") from None
        if response.status_code >= 500:
            raise Unreachable(f"the Hookbin server at {self.server} failed: {_api_error(response)}")
        if response.status_code != 200:
            raise Refused(
                f"{self.server} refused to list bin {self.bin_id!r}: {_api_error(response)}"
            )
        items = response.json().get("items") or []
        return str(items[0]["id"]) if items else ZERO_ID

    def _open(self) -> _Stream:
        url = stream_url(self.server, self.bin_id, self.last_id)
        try:
            ws = self.connect(url)
        except websocket.WebSocketBadStatusException as exc:
            status = exc.status_code
            if status == 404:
                raise Refused(f"there is no bin {self.bin_id!r} on {self.server}") from None
            if 400 <= status < 500:
                raise Refused(
                    f"{self.server} refused the stream of bin {self.bin_id!r} after "
                    f"{self.last_id} (HTTP {status})"
                ) from None
            raise Unreachable(f"the stream answered HTTP {status}") from None
        except (websocket.WebSocketException, OSError) as exc:
            raise Unreachable(
                f"cannot reach the Hookbin server at {self.server}: {exc or type(exc).__name__}"
            ) from None
        return _Stream(ws)

    def _reconnect(self, reason: str) -> _Stream:
        delay = BACKOFF_START
        while True:
            self.echo(f"connection lost ({reason}), reconnecting in {delay:g} s…")
            self.sleep(delay)
            try:
                return self._open()
            except Unreachable as exc:
                reason = str(exc)
                delay = min(delay * 2, BACKOFF_MAX)

    def _follow(self, stream: _Stream) -> str:
        """Handle frames until the connection is lost; return why."""
        while True:
            frame = stream.next(timeout=0.5)
            if frame is None:
                continue
            if isinstance(frame, _Lost):
                return frame.reason
            try:
                data = json.loads(frame)
            except ValueError:
                self.echo("warning: ignoring a stream frame that is not JSON", err=True)
                continue
            if not isinstance(data, dict) or data.get("type") != "request":
                continue  # other frame types are for other clients
            try:
                self.handle(data["request"])
            except _ServerTrouble as exc:
                return str(exc)

    # -- one request --

    def handle(self, item: dict[str, Any]) -> None:
        """Forward one request and report the answer, unless it was handled already."""
        request_id = str(item.get("id", ""))
        seq = seq_from_id(request_id)
        if seq is None:
            self.echo(f"warning: ignoring a request with a bad id {request_id!r}", err=True)
            return
        if seq <= (seq_from_id(self.last_id) or 0):
            return  # handled before this reconnect
        body = self._fetch_body(request_id)
        if body is None:
            head = f"{self.clock():%H:%M:%S}  {printable(item['method'])}"
            self.echo(
                f"{head}  {printable(suffix_of(item))}  -> "
                + click.style("skipped: deleted on the server", fg="yellow")
            )
        else:
            result = send(
                item["method"],
                self.target,
                suffix_of(item),
                [(name, value) for name, value in item["headers"]],
                body,
                timeout=self.timeout,
                max_response_bytes=REPORT_MAX_BODY,
                verify_tls=self.verify_tls,
            )
            self.echo(format_line(self.clock(), item, result))
            self._report(item, result)
        self.last_id = request_id
        self._save()

    def _fetch_body(self, request_id: str) -> bytes | None:
        """The exact body; None when the request was deleted meanwhile."""
        url = f"{self.server}/api/requests/{request_id}/body"
        try:
            response = self.api.get(url)
        except httpx.HTTPError as exc:
            raise _ServerTrouble(f"fetching the body of {request_id} failed: {exc}") from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise _ServerTrouble(f"fetching the body of {request_id}: {_api_error(response)}")
        return response.content

    def _report(self, item: dict[str, Any], result: OutboundResult) -> None:
        """Store the local answer on the server, retrying until the server takes it."""
        payload = {
            "kind": "listen",
            "url": self.forward_to,
            "method": item["method"],
            "status": result.status,
            "headers": [[name, value] for name, value in result.headers],
            "body_base64": base64.b64encode(result.body).decode("ascii"),
            "truncated": result.truncated,
            "elapsed_ms": round(result.elapsed_ms, 1),
            "error": result.error,
        }
        url = f"{self.server}/api/requests/{item['id']}/attempts"
        delay = BACKOFF_START
        while True:
            try:
                response = self.api.post(url, json=payload)
            except httpx.HTTPError as exc:
                problem = str(exc) or type(exc).__name__
            else:
                if response.status_code in (201, 404):  # stored, or the request is gone
                    return
                if response.status_code < 500:
                    self.echo(
                        f"warning: the server did not store the answer to {item['id']}: "
                        f"{_api_error(response)}",
                        err=True,
                    )
                    return
                problem = _api_error(response)
            self.echo(
                f"could not report the answer to {item['id']} ({problem}), "
                f"retrying in {delay:g} s…",
                err=True,
            )
            self.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    def _save(self) -> None:
        try:
            save_state(self.state_path, self.bin_id, self.server, self.last_id)
        except OSError as exc:
            if not self._save_failed:
                self._save_failed = True
                self.echo(
                    f"warning: cannot save the position to {self.state_path}: "
                    f"{exc.strerror or exc}; a restart will not resume where this run stopped",
                    err=True,
                )
        else:
            self._save_failed = False
