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
kept in a state file (``app.cli.listen_state``) so that the next ``hookbin listen`` carries on
where this one stopped. A request that was forwarded but whose answer could not be reported yet is
not given up: the report is retried until the server takes it, so the local target does not see
it twice. (Only a listener stopped between forwarding a request and saving its position sends it
again.)
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal

import click
import httpx
import websocket

from app.cli.listen_output import format_line, skipped_line
from app.cli.listen_state import StateError, default_state_path, load_state, save_state
from app.cli.listen_stream import Lost, Stream, WebSocketLike, connect_websocket, stream_url
from app.cli.listen_urls import local_target, quoted, server_base
from app.delivery.client import OutboundResult, send
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
        connect: Callable[[str], WebSocketLike] | None = None,
        api: httpx.Client | None = None,
        token: str | None = None,
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
        self.connect = connect or partial(connect_websocket, token=token)
        auth = {"Authorization": f"Bearer {token}"} if token else None
        self.api = api or httpx.Client(timeout=API_TIMEOUT, follow_redirects=False, headers=auth)
        #: Id of the last request handled (forwarded and reported), or the starting point.
        self.last_id = ZERO_ID
        self._save_failed = False

    # -- running --

    def run(self) -> int:
        """Follow the bin until Ctrl-C (0), a refusal (2) or an unreachable server at start (1)."""
        stream: Stream | None = None
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
        url = f"{self.server}/api/bins/{quoted(self.bin_id)}"
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
        url = f"{self.server}/api/bins/{quoted(self.bin_id)}/requests"
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

    def _open(self) -> Stream:
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
        return Stream(ws)

    def _reconnect(self, reason: str) -> Stream:
        delay = BACKOFF_START
        while True:
            self.echo(f"connection lost ({reason}), reconnecting in {delay:g} s…")
            self.sleep(delay)
            try:
                return self._open()
            except Unreachable as exc:
                reason = str(exc)
                delay = min(delay * 2, BACKOFF_MAX)

    def _follow(self, stream: Stream) -> str:
        """Handle frames until the connection is lost; return why."""
        while True:
            frame = stream.next(timeout=0.5)
            if frame is None:
                continue
            if isinstance(frame, Lost):
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
            self.echo(skipped_line(self.clock(), item))
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
