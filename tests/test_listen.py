"""``hookbin listen``: a real listener process between a real Hookbin server and a local target.

The listener runs as a subprocess (``python -m app.cli listen``), the server is a real
``hookbin serve`` and the local target is ``tests/echo.py``. Waits poll with generous deadlines;
nothing asserts on timing. The pieces of ``app.cli`` behind it are also tested on their own.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import click
import httpx
import pytest
import websocket

from app.cli import listen_output, listen_state, listen_stream, listen_urls
from app.cli import listener as listen
from app.delivery.client import OutboundResult
from tests.conftest import ROOT, Server, free_port, start_server
from tests.echo import EchoTarget, Received, start_echo

WAIT = 30.0  # seconds; generous on purpose
BODY = bytes(range(256))


# --- helpers ------------------------------------------------------------------------------------


def wait_until(check: Callable[[], object], what: str, timeout: float = WAIT) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# Sets SIGINT's disposition (argv[1]: a signal.Handlers value), then execs the rest of argv:
# the disposition is inherited through exec, as from a shell or a CI runner.
WITH_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.Handlers(int(sys.argv[1]))); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])"
)


class ListenProcess:
    """``python -m app.cli listen ...`` with its output in a file.

    ``sigint`` sets the SIGINT disposition the command starts with; by default it inherits the
    test run's own.
    """

    def __init__(
        self,
        server_url: str,
        bin_id: str,
        target: str,
        state: Path,
        *extra: str,
        sigint: signal.Handlers | None = None,
    ) -> None:
        self.log = state.with_name(f"{state.stem}-{time.monotonic_ns()}.log")
        launcher = [] if sigint is None else ["-c", WITH_SIGINT, str(int(sigint))]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    *launcher,
                    "-m",
                    "app.cli",
                    "listen",
                    bin_id,
                    "--forward-to",
                    target,
                    "--server",
                    server_url,
                    "--state",
                    str(state),
                    *extra,
                ],
                cwd=ROOT,
                env={**os.environ, "NO_COLOR": "1"},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in the listener's output:\n{self.output()}")

    def ready(self) -> ListenProcess:
        self.wait_for_output("Ready. Forwarding")
        return self

    def interrupt(self, sig: int = signal.SIGINT) -> int:
        """Ctrl-C (or ``sig``); the exit code."""
        self.process.send_signal(sig)
        return self.process.wait(timeout=WAIT)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=WAIT)


@pytest.fixture
def echo() -> Iterator[EchoTarget]:
    target = start_echo()
    yield target
    target.close()


@pytest.fixture
def processes() -> Iterator[list[ListenProcess]]:
    started: list[ListenProcess] = []
    yield started
    for process in started:
        process.kill()


def capture(server: Server, bin_id: str, path: str, method: str = "POST", **kwargs) -> str:
    response = httpx.request(method, f"{server.url}/h/{bin_id}{path}", timeout=10, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()["request_id"]


def saved_cursor(state: Path) -> str | None:
    try:
        return json.loads(state.read_text())["after"]
    except (OSError, ValueError, KeyError):
        return None


def header_values(received: Received, name: str) -> list[str]:
    return [v for k, v in received.headers if k.lower() == name.lower()]


def forwarded_paths(echo: EchoTarget) -> list[str]:
    return [r.path for r in echo.received]


def settle(
    server: Server, bin_id: str, echo: EchoTarget, expected: list[str], name: str = "sentinel"
) -> None:
    """Send a last request and wait for it: the listener works in order, so once it arrived,
    anything sent twice before it would have arrived too. Then compare exactly."""
    capture(server, bin_id, f"/{name}")
    wait_until(lambda: f"/hooks/{name}" in forwarded_paths(echo), f"the {name} request")
    assert forwarded_paths(echo) == [*expected, f"/hooks/{name}"]


# --- end to end ---------------------------------------------------------------------------------


def test_forwards_each_request_byte_exact_and_reports_the_answer(
    shared_server: Server, echo: EchoTarget, tmp_path: Path, processes: list[ListenProcess]
) -> None:
    bin_id = shared_server.create_bin()["id"]
    listener = ListenProcess(
        shared_server.url, bin_id, echo.url + "/hooks", tmp_path / "state.json"
    )
    processes.append(listener)
    listener.ready()

    ids = [
        capture(
            shared_server,
            bin_id,
            "/sub/path?x=1",
            "PUT",
            content=BODY,
            headers=[("X-Dup", "one"), ("X-Other", "o"), ("X-Dup", "two")],
        ),
        # Chunked on the way in: the captured Transfer-Encoding must not be copied.
        capture(shared_server, bin_id, "", "POST", content=iter([BODY[:100], BODY[100:]])),
        capture(shared_server, bin_id, "/a%2Fb?q=%26&r=", "PROPFIND"),
        capture(shared_server, bin_id, "/empty", "DELETE"),
    ]
    got = echo.wait_for(4, timeout=WAIT)
    assert [(r.method, r.path) for r in got] == [
        ("PUT", "/hooks/sub/path?x=1"),
        ("POST", "/hooks"),
        ("PROPFIND", "/hooks/a%2Fb?q=%26&r="),
        ("DELETE", "/hooks/empty"),
    ]
    assert [r.body for r in got] == [BODY, BODY, b"", b""]

    put = got[0]
    assert header_values(put, "X-Dup") == ["one", "two"]
    names = [k.lower() for k, _ in put.headers]
    assert (
        names.index("x-dup") < names.index("x-other") < len(names) - 1 - names[::-1].index("x-dup")
    )
    target_host = echo.url.removeprefix("http://")
    for received in got:
        # Host names the target, not the capture server; framing is rebuilt, never copied.
        assert header_values(received, "Host") == [target_host]
        assert len(header_values(received, "Content-Length")) <= 1
        assert header_values(received, "Transfer-Encoding") == []
    assert header_values(got[0], "Content-Length") == ["256"]
    assert header_values(got[1], "Content-Length") == ["256"]

    for request_id, method in zip(ids, ["PUT", "POST", "PROPFIND", "DELETE"], strict=True):

        def listen_attempt(request_id: str = request_id) -> dict | None:
            url = f"{shared_server.url}/api/requests/{request_id}/attempts"
            items = httpx.get(url, timeout=10).json()["items"]
            return next((a for a in items if a["kind"] == "listen"), None)

        attempt = wait_until(listen_attempt, f"the listen attempt of {request_id}")
        assert attempt["status"] == 201
        assert attempt["method"] == method
        assert attempt["url"] == echo.url + "/hooks"
        assert json.loads(attempt["body_text"])["method"] == method
        assert ["Content-Type", "application/json"] in attempt["headers"]
        assert attempt["error"] is None

    wait_until(lambda: saved_cursor(tmp_path / "state.json") == ids[-1], "the saved cursor")
    assert listener.interrupt() == 0
    out = listener.output()
    assert "PUT  /sub/path?x=1  -> 201  " in out
    assert "PROPFIND  /a%2Fb?q=%26&r=  -> 201  " in out
    assert out.rstrip().endswith("stopped")


def test_survives_a_server_restart_without_missing_or_repeating_anything(
    sqlite_url: str, tmp_path: Path, echo: EchoTarget, processes: list[ListenProcess]
) -> None:
    server = start_server(sqlite_url, tmp_path)
    try:
        bin_id = server.create_bin()["id"]
        state = tmp_path / "state.json"
        listener = ListenProcess(server.url, bin_id, echo.url + "/hooks", state)
        processes.append(listener)
        listener.ready()

        before = [capture(server, bin_id, f"/before-{i}", content=BODY) for i in range(3)]
        echo.wait_for(3, timeout=WAIT)
        wait_until(lambda: saved_cursor(state) == before[-1], "the saved cursor")

        port = server.port
        server.stop()  # the listener loses its stream and keeps retrying
        listener.wait_for_output("connection lost")
        server = start_server(sqlite_url, tmp_path, port=port)

        for i in range(3):
            capture(server, bin_id, f"/after-{i}", content=BODY)
        expected = [f"/hooks/before-{i}" for i in range(3)] + [
            f"/hooks/after-{i}" for i in range(3)
        ]
        wait_until(lambda: len(echo.received) >= 6, "the requests sent after the restart", 90)
        settle(server, bin_id, echo, expected)
        assert all(r.body == BODY for r in echo.received[:6])
        listener.wait_for_output(f"reconnected, resuming after {before[-1]}")
        assert listener.process.poll() is None
    finally:
        server.stop()


def test_a_restarted_listener_forwards_exactly_what_it_missed(
    shared_server: Server, tmp_path: Path, echo: EchoTarget, processes: list[ListenProcess]
) -> None:
    bin_id = shared_server.create_bin()["id"]
    state = tmp_path / "state.json"
    first = ListenProcess(shared_server.url, bin_id, echo.url + "/hooks", state)
    processes.append(first)
    first.ready()
    handled = [capture(shared_server, bin_id, f"/first-{i}") for i in range(3)]
    echo.wait_for(3, timeout=WAIT)
    wait_until(lambda: saved_cursor(state) == handled[-1], "the saved cursor")
    first.kill()  # no chance to say goodbye

    missed = [capture(shared_server, bin_id, f"/missed-{i}", content=BODY) for i in range(4)]

    second = ListenProcess(shared_server.url, bin_id, echo.url + "/hooks", state)
    processes.append(second)
    second.ready()
    assert f"Resuming after request {handled[-1]}" in second.output()
    expected = [f"/hooks/first-{i}" for i in range(3)] + [f"/hooks/missed-{i}" for i in range(4)]
    wait_until(lambda: len(echo.received) >= 7, "the missed requests")
    settle(shared_server, bin_id, echo, expected)
    # Saved once reported: the sentinel's id, which sorts after the missed ones.
    wait_until(lambda: (saved_cursor(state) or "") > missed[-1], "the saved cursor")

    # --from-now ignores the saved position; a fresh state starts at the newest request.
    assert second.interrupt() == 0
    capture(shared_server, bin_id, "/skipped")
    third = ListenProcess(shared_server.url, bin_id, echo.url + "/hooks", state, "--from-now")
    processes.append(third)
    third.ready()
    settle(shared_server, bin_id, echo, [*expected, "/hooks/sentinel"], "sentinel-2")


def test_from_start_forwards_what_the_bin_already_holds(
    shared_server: Server, tmp_path: Path, echo: EchoTarget, processes: list[ListenProcess]
) -> None:
    bin_id = shared_server.create_bin()["id"]
    for i in range(3):
        capture(shared_server, bin_id, f"/old-{i}")

    # No state: only new requests.
    fresh = ListenProcess(shared_server.url, bin_id, echo.url + "/hooks", tmp_path / "a.json")
    processes.append(fresh)
    fresh.ready()
    settle(shared_server, bin_id, echo, [])
    assert fresh.interrupt() == 0

    echo.received.clear()
    everything = ListenProcess(
        shared_server.url, bin_id, echo.url + "/hooks", tmp_path / "b.json", "--from-start"
    )
    processes.append(everything)
    everything.ready()
    wait_until(lambda: len(echo.received) >= 4, "the old requests")
    settle(
        shared_server,
        bin_id,
        echo,
        [f"/hooks/old-{i}" for i in range(3)] + ["/hooks/sentinel"],
        "sentinel-2",
    )


def test_a_target_that_is_down_is_reported_as_an_error(
    shared_server: Server, tmp_path: Path, processes: list[ListenProcess]
) -> None:
    bin_id = shared_server.create_bin()["id"]
    target = f"http://127.0.0.1:{free_port()}"
    listener = ListenProcess(shared_server.url, bin_id, target, tmp_path / "state.json")
    processes.append(listener)
    listener.ready()
    request_id = capture(shared_server, bin_id, "/x")

    def attempts() -> list[dict]:
        url = f"{shared_server.url}/api/requests/{request_id}/attempts"
        return httpx.get(url, timeout=10).json()["items"]

    attempt = wait_until(attempts, "the failed attempt")[0]
    assert attempt["kind"] == "listen" and attempt["status"] is None
    assert "connection refused" in attempt["error"]
    listener.wait_for_output("POST  /x  -> error: connection refused")


@pytest.mark.parametrize(
    ("inherited", "sig"),
    [
        (signal.SIG_DFL, signal.SIGINT),
        (signal.SIG_IGN, signal.SIGINT),  # a background job of a shell, some CI runners
        (signal.SIG_IGN, signal.SIGTERM),
    ],
    ids=["ctrl-c", "ctrl-c-with-sigint-ignored", "kill"],
)
def test_ctrl_c_and_kill_stop_the_listener_cleanly(
    shared_server: Server,
    echo: EchoTarget,
    tmp_path: Path,
    processes: list[ListenProcess],
    inherited: signal.Handlers,
    sig: int,
) -> None:
    bin_id = shared_server.create_bin()["id"]
    state = tmp_path / "state.json"
    listener = ListenProcess(shared_server.url, bin_id, echo.url, state, sigint=inherited)
    processes.append(listener)
    listener.ready()
    request_id = capture(shared_server, bin_id, "/one")
    wait_until(lambda: saved_cursor(state) == request_id, "the saved cursor")

    assert listener.interrupt(sig) == 0, listener.output()
    assert listener.output().rstrip().endswith("stopped")
    assert saved_cursor(state) == request_id


def run_listen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "listen", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_unknown_bin_is_a_clear_error_with_exit_code_2(
    shared_server: Server, tmp_path: Path
) -> None:
    result = run_listen(
        "no-such-bin",
        "--forward-to",
        "http://127.0.0.1:3000",
        "--server",
        shared_server.url,
        "--state",
        str(tmp_path / "s.json"),
    )
    assert result.returncode == 2, result
    assert result.stderr.strip() == (
        f"hookbin listen: there is no bin 'no-such-bin' on {shared_server.url}"
    )
    assert not (tmp_path / "s.json").exists()


def test_an_unreachable_server_at_start_is_exit_code_1(tmp_path: Path) -> None:
    server = f"http://127.0.0.1:{free_port()}"
    result = run_listen(
        "whatever", "--forward-to", "http://127.0.0.1:3000", "--server", server,
        "--state", str(tmp_path / "s.json"),
    )  # fmt: skip
    assert result.returncode == 1, result
    assert f"cannot reach the Hookbin server at {server}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_arguments_are_usage_errors(tmp_path: Path) -> None:
    for args in (
        ["b", "--forward-to", "ftp://x"],
        ["b", "--forward-to", "http://localhost:3000", "--server", "localhost:8000"],
        ["b", "--forward-to", "http://127.0.0.1:8000/h/b", "--server", "http://127.0.0.1:8000"],
        ["b", "--forward-to", "http://localhost:3000", "--from-now", "--from-start"],
    ):
        result = run_listen(*args, "--state", str(tmp_path / "s.json"))
        assert result.returncode == 2, (args, result)
        assert "Error" in result.stderr


# --- the attempts endpoint ----------------------------------------------------------------------


def report(server: Server, request_id: str, **fields) -> httpx.Response:
    payload = {
        "kind": "listen",
        "url": "http://localhost:3000/hooks",
        "method": "POST",
        "status": 200,
        "headers": [["Content-Type", "text/plain"], ["X-A", "1"], ["X-A", "2"]],
        "body_base64": base64.b64encode(b"ok\xff").decode(),
        "elapsed_ms": 12.5,
        "error": None,
        **fields,
    }
    url = f"{server.url}/api/requests/{request_id}/attempts"
    return httpx.post(url, json=payload, timeout=10)


def test_reporting_an_attempt_stores_it(shared_server: Server) -> None:
    bin_id = shared_server.create_bin()["id"]
    request_id = capture(shared_server, bin_id, "/r")
    response = report(shared_server, request_id)
    assert response.status_code == 201, response.text
    attempt = response.json()
    assert attempt["kind"] == "listen" and attempt["status"] == 200
    assert attempt["headers"] == [["Content-Type", "text/plain"], ["X-A", "1"], ["X-A", "2"]]
    assert base64.b64decode(attempt["body_base64"]) == b"ok\xff"
    assert attempt["body_text"] is None and attempt["body_size"] == 3
    assert attempt["truncated"] is False and attempt["elapsed_ms"] == 12.5
    listed = httpx.get(f"{shared_server.url}/api/requests/{request_id}/attempts").json()
    assert listed["items"] == [attempt]

    failed = report(
        shared_server, request_id, status=None, headers=[], body_base64="", error="refused"
    ).json()
    assert failed["status"] is None and failed["error"] == "refused"
    assert report(shared_server, request_id, truncated=True).json()["truncated"] is True


@pytest.mark.parametrize(
    "fields",
    [
        {"status": "200"},
        {"status": True},
        {"status": 42},
        {"url": 5},
        {"url": ""},
        {"method": None},
        {"method": "X" * 65},
        {"headers": [["a"]]},
        {"headers": {"a": "b"}},
        {"headers": [["a", 1]]},
        {"body_base64": "not base64!"},
        {"body_base64": None},
        {"elapsed_ms": "fast"},
        {"elapsed_ms": -1},
        {"error": 3},
        {"truncated": "yes"},
        {"kind": None},
    ],
)
def test_reports_with_wrong_fields_are_400(shared_server: Server, fields: dict) -> None:
    bin_id = shared_server.create_bin()["id"]
    request_id = capture(shared_server, bin_id, "/r")
    response = report(shared_server, request_id, **fields)
    assert response.status_code == 400, fields
    assert isinstance(response.json()["error"], str)
    assert httpx.get(f"{shared_server.url}/api/requests/{request_id}/attempts").json() == {
        "items": []
    }


def test_report_refusals(shared_server: Server) -> None:
    bin_id = shared_server.create_bin()["id"]
    request_id = capture(shared_server, bin_id, "/r")
    url = f"{shared_server.url}/api/requests/{request_id}/attempts"
    for body in (b"{not json", b"[]", b'"x"'):
        response = httpx.post(url, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400
        assert response.json() == {"error": "expected a JSON object body"}
    for kind in ("replay", "forward", "other"):
        response = report(shared_server, request_id, kind=kind)
        assert response.status_code == 422 and "listen" in response.json()["error"]
    unknown = report(shared_server, "f" * 32)
    assert unknown.status_code == 404 and unknown.json() == {"error": "not found"}
    assert report(shared_server, "nope").status_code == 404


def test_a_reported_body_is_kept_up_to_the_cap(sqlite_url: str, tmp_path: Path) -> None:
    server = start_server(
        sqlite_url, tmp_path, extra_env={"HOOKBIN_REPLAY_MAX_RESPONSE_BYTES": "10"}
    )
    try:
        request_id = capture(server, server.create_bin()["id"], "/r")
        body = base64.b64encode(b"0123456789abcdef").decode()
        attempt = report(server, request_id, body_base64=body).json()
        assert base64.b64decode(attempt["body_base64"]) == b"0123456789"
        assert attempt["body_size"] == 16 and attempt["truncated"] is True
    finally:
        server.stop()


# --- the pieces, without a server ---------------------------------------------------------------


def request_id(seq: int) -> str:
    return f"{seq:012x}" + "ab" * 10


def test_state_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "listen-b1.json"
    assert listen_state.load_state(path, "b1") is None
    listen_state.save_state(path, "b1", "http://h:8000", request_id(5))
    assert listen_state.load_state(path, "b1") == request_id(5)
    listen_state.save_state(path, "b1", "http://h:8000", request_id(6))
    assert listen_state.load_state(path, "b1") == request_id(6)
    assert sorted(p.name for p in path.parent.iterdir()) == ["listen-b1.json"]  # no temp files
    data = json.loads(path.read_text())
    assert data["bin_id"] == "b1" and data["server"] == "http://h:8000"

    with pytest.raises(listen_state.StateError, match="belongs to bin 'b1'"):
        listen_state.load_state(path, "b2")
    path.write_text("{half")
    with pytest.raises(listen_state.StateError, match="not valid JSON"):
        listen_state.load_state(path, "b1")
    path.write_text(json.dumps({"bin_id": "b1", "after": "garbage"}))
    with pytest.raises(listen_state.StateError, match="no valid request id"):
        listen_state.load_state(path, "b1")


def test_default_state_path() -> None:
    environ = {"XDG_STATE_HOME": "/xdg", "HOME": "/home/u"}
    assert listen_state.default_state_path("Ab-_9", environ) == (
        Path("/xdg/hookbin/listen-Ab-_9.json")
    )
    assert listen_state.default_state_path("b/../x", {"HOME": "/home/u"}) == Path(
        "/home/u/.local/state/hookbin/listen-b____x.json"
    )
    # A relative XDG_STATE_HOME is invalid by the spec and ignored.
    assert listen_state.default_state_path("b", {"XDG_STATE_HOME": "rel", "HOME": "/h"}) == Path(
        "/h/.local/state/hookbin/listen-b.json"
    )


def test_stream_and_target_urls() -> None:
    assert listen_stream.stream_url("http://127.0.0.1:8000/", "b1") == (
        "ws://127.0.0.1:8000/api/bins/b1/stream"
    )
    assert listen_stream.stream_url("https://hooks.example.com/hb", "b1", request_id(1)) == (
        f"wss://hooks.example.com/hb/api/bins/b1/stream?after={request_id(1)}"
    )
    assert listen_stream.stream_url("http://h", "a b/c") == "ws://h/api/bins/a%20b%2Fc/stream"
    for bad in ("localhost:8000", "ftp://h", "http://", "http://h/?x=1"):
        with pytest.raises(ValueError):
            listen_urls.server_base(bad)

    def item(path: str, query: str) -> dict:
        return {"path": path, "query_string": query}

    base = "http://localhost:3000/hooks"
    assert listen_urls.local_url(base, item("/stripe/webhook", "x=1")) == (
        "http://localhost:3000/hooks/stripe/webhook?x=1"
    )
    assert listen_urls.local_url(base, item("/", "")) == base
    assert listen_urls.local_url(base + "/", item("/a%2Fb", "q=%26")) == (
        "http://localhost:3000/hooks/a%2Fb?q=%26"
    )
    assert listen_urls.local_url("http://localhost:3000/?k=v", item("/x", "y=2")) == (
        "http://localhost:3000/x?k=v&y=2"
    )

    assert listen_urls.forwards_into_capture("http://127.0.0.1:8000/h/abc", "http://127.0.0.1:8000")
    assert not listen_urls.forwards_into_capture(
        "http://127.0.0.1:3000/h/abc", "http://127.0.0.1:8000"
    )
    assert not listen_urls.forwards_into_capture(
        "http://127.0.0.1:8000/hooks", "http://127.0.0.1:8000"
    )
    target = listen_urls.local_target("http://[::1]:3000/x")
    assert (target.host, target.port, target.address) == ("::1", 3000, "::1")
    with pytest.raises(ValueError):
        listen_urls.local_target("mailto:x@y")


def test_output_line_format() -> None:
    when = datetime(2024, 5, 1, 12, 3, 4)
    item = {"method": "POST", "path": "/stripe/webhook", "query_string": "x=1"}
    line = listen_output.format_line(when, item, OutboundResult(status=200, elapsed_ms=12.4))
    assert click.unstyle(line) == "12:03:04  POST  /stripe/webhook?x=1  -> 200  12 ms"
    assert click.style("200", fg="green") in line

    for status, colour in ((302, "yellow"), (404, "yellow"), (500, "red"), (None, "red")):
        assert listen_output.status_colour(status) == colour
    failed = OutboundResult(status=None, elapsed_ms=1.6, error="connection refused by h:1")
    line = listen_output.format_line(when, {**item, "query_string": ""}, failed)
    assert click.unstyle(line) == (
        "12:03:04  POST  /stripe/webhook  -> error: connection refused by h:1  2 ms"
    )
    assert click.style("error: connection refused by h:1", fg="red") in line

    # What strangers sent cannot drive the terminal.
    sneaky = {"method": "GET", "path": "/a\x1b[2Jb", "query_string": ""}
    line = listen_output.format_line(when, sneaky, OutboundResult(status=204))
    assert "\x1b[2J" not in line and "/a\\x1b[2Jb" in line


class FakeSocket:
    """A stream that delivers some frames, then a close frame (a server restart)."""

    def __init__(self, frames: list[str]) -> None:
        self.frames = list(frames)

    def recv_data(self, control_frame: bool = False) -> tuple[int, bytes]:
        if self.frames:
            return websocket.ABNF.OPCODE_TEXT, self.frames.pop(0).encode()
        return websocket.ABNF.OPCODE_CLOSE, struct.pack("!H", 1012) + b"server restarting"

    def abort(self) -> None:
        pass

    def shutdown(self) -> None:
        pass


def frame(seq: int, path: str) -> str:
    item = {
        "id": request_id(seq),
        "bin_id": "b1",
        "method": "POST",
        "path": path,
        "query_string": "",
        "headers": [["Host", "hookbin.example"], ["X-Seq", str(seq)]],
        "body_size": 2,
    }
    return json.dumps({"type": "request", "request": item})


def fake_api(reports: list[dict], newest: str | None = None) -> httpx.Client:
    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/bins/b1":
            return httpx.Response(200, json={"id": "b1", "capture_url": "http://hb/h/b1"})
        if path == "/api/bins/b1/requests":
            return httpx.Response(200, json={"items": [{"id": newest}] if newest else []})
        if path.endswith("/body"):
            return httpx.Response(200, content=b"hi")
        if path.endswith("/attempts"):
            reports.append({"id": path.split("/")[3], **json.loads(request.content)})
            return httpx.Response(201, json={})
        return httpx.Response(404, json={"error": "not found"})

    return httpx.Client(transport=httpx.MockTransport(handle))


def test_listener_reconnects_with_backoff_and_resumes_after_the_last_request(
    tmp_path: Path, echo: EchoTarget
) -> None:
    urls: list[str] = []
    # Each entry is what one connection attempt does.
    attempts: list[object] = [
        FakeSocket([frame(1, "/one")]),
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionRefusedError(111, "Connection refused"),
        FakeSocket([frame(1, "/one"), frame(2, "/two")]),  # a repeat is not forwarded again
        ConnectionRefusedError(111, "Connection refused"),
        websocket.WebSocketBadStatusException("gone", 404),  # the bin was deleted
    ]

    def connect(url: str) -> FakeSocket:
        urls.append(url)
        outcome = attempts.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    sleeps: list[float] = []
    lines: list[tuple[str, bool]] = []
    reports: list[dict] = []
    listener = listen.Listener(
        "http://hb",
        "b1",
        echo.url,
        state_path=tmp_path / "state.json",
        echo=lambda text, err=False: lines.append((click.unstyle(text), err)),
        clock=lambda: datetime(2024, 5, 1, 9, 0, 0),
        sleep=sleeps.append,
        connect=connect,
        api=fake_api(reports),
    )
    assert listener.run() == 2

    assert sleeps == [0.5, 1.0, 2.0, 0.5, 1.0]  # doubling, and back to 0.5 after a connect
    assert urls == [
        f"ws://hb/api/bins/b1/stream?after={listen.ZERO_ID}",
        *[f"ws://hb/api/bins/b1/stream?after={request_id(1)}"] * 3,
        *[f"ws://hb/api/bins/b1/stream?after={request_id(2)}"] * 2,
    ]
    assert [r.path for r in echo.received] == ["/one", "/two"]
    assert header_values(echo.received[1], "X-Seq") == ["2"]
    assert [(r["id"], r["status"], r["kind"]) for r in reports] == [
        (request_id(1), 201, "listen"),
        (request_id(2), 201, "listen"),
    ]
    assert listen_state.load_state(tmp_path / "state.json", "b1") == request_id(2)
    out = [text for text, err in lines if not err]
    assert out[0] == f"Ready. Forwarding http://hb/h/b1 -> {echo.url} (Ctrl-C to stop)"
    assert out[1].startswith("09:00:00  POST  /one  -> 201  ")
    assert out[2] == (
        "connection lost (the server closed the stream (1012 server restarting)), "
        "reconnecting in 0.5 s…"
    )
    assert f"reconnected, resuming after {request_id(1)}" in out
    assert lines[-1] == ("hookbin listen: there is no bin 'b1' on http://hb", True)


def test_a_report_the_server_fails_is_retried_until_taken_and_never_forwarded_twice(
    tmp_path: Path, echo: EchoTarget
) -> None:
    """The local target saw the request: a 5xx on the report must not make it see it again."""
    failures: list[httpx.Response | Exception] = [
        httpx.Response(503),
        httpx.Response(502, json={"error": "bad gateway"}),
        httpx.ReadTimeout("timed out"),
        httpx.Response(500),
    ]
    posted: list[str] = []
    stored: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/bins/b1":
            return httpx.Response(200, json={"id": "b1", "capture_url": "http://hb/h/b1"})
        if path.endswith("/body"):
            return httpx.Response(200, content=b"hi")
        if path.endswith("/attempts"):
            posted.append(path.split("/")[3])
            if failures:
                failure = failures.pop(0)
                if isinstance(failure, Exception):
                    raise failure
                return failure
            stored.append(path.split("/")[3])
            return httpx.Response(201, json={})
        return httpx.Response(404, json={"error": "not found"})

    # Like the server, each connection sends the requests after its cursor; the third is refused
    # (the bin was deleted), which ends the run.
    frames = [frame(1, "/one"), frame(2, "/two")]
    urls: list[str] = []

    def connect(url: str) -> FakeSocket:
        urls.append(url)
        if len(urls) == 3:
            raise websocket.WebSocketBadStatusException("gone", 404)
        after = url.rsplit("after=", 1)[1]
        return FakeSocket([f for f in frames if json.loads(f)["request"]["id"] > after])

    sleeps: list[float] = []
    errors: list[str] = []
    listener = listen.Listener(
        "http://hb",
        "b1",
        echo.url,
        state_path=tmp_path / "state.json",
        start="start",
        echo=lambda text, err=False: errors.append(click.unstyle(text)) if err else None,
        sleep=sleeps.append,
        connect=connect,
        api=httpx.Client(transport=httpx.MockTransport(handle)),
    )
    assert listener.run() == 2

    assert [r.path for r in echo.received] == ["/one", "/two"]
    assert posted == [request_id(1)] * 5 + [request_id(2)]
    assert stored == [request_id(1), request_id(2)]
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 0.5, 0.5]  # the report backs off; then reconnects
    assert urls[1:] == [f"ws://hb/api/bins/b1/stream?after={request_id(2)}"] * 2
    assert errors[:4] == [
        f"could not report the answer to {request_id(1)} (HTTP 503), retrying in 0.5 s…",
        f"could not report the answer to {request_id(1)} (HTTP 502: bad gateway), retrying in 1 s…",
        f"could not report the answer to {request_id(1)} (timed out), retrying in 2 s…",
        f"could not report the answer to {request_id(1)} (HTTP 500), retrying in 4 s…",
    ]
    assert listen_state.load_state(tmp_path / "state.json", "b1") == request_id(2)


@pytest.mark.parametrize(
    ("start", "saved", "newest", "after"),
    [
        ("saved", request_id(7), request_id(9), request_id(7)),
        ("saved", None, request_id(9), request_id(9)),
        ("saved", None, None, listen.ZERO_ID),
        ("now", request_id(7), request_id(9), request_id(9)),
        ("start", request_id(7), request_id(9), listen.ZERO_ID),
    ],
)
def test_where_the_listener_starts(
    tmp_path: Path, start: listen.Start, saved: str | None, newest: str | None, after: str
) -> None:
    state = tmp_path / "state.json"
    if saved:
        listen_state.save_state(state, "b1", "http://hb", saved)
    urls: list[str] = []

    def connect(url: str) -> FakeSocket:
        urls.append(url)
        raise KeyboardInterrupt  # Ctrl-C right away

    listener = listen.Listener(
        "http://hb",
        "b1",
        "http://127.0.0.1:9",
        state_path=state,
        start=start,
        echo=lambda *a, **k: None,
        connect=connect,
        api=fake_api([], newest),
    )
    assert listener.run() == 0
    assert urls == [f"ws://hb/api/bins/b1/stream?after={after}"]
    assert listen_state.load_state(state, "b1") == after


@pytest.mark.parametrize(
    ("answer", "code", "message"),
    [
        (httpx.Response(404, json={"error": "not found"}), 2, "there is no bin 'b1' on http://hb"),
        (httpx.Response(400, json={"error": "no"}), 2, "http://hb refused bin 'b1': HTTP 400: no"),
        (httpx.Response(503), 1, "the Hookbin server at http://hb failed: HTTP 503"),
        (httpx.ConnectError("Connection refused"), 1, "cannot reach the Hookbin server at"),
        (httpx.Response(200, text="<html>"), 2, "http://hb does not look like a Hookbin server"),
    ],
)
def test_start_refusals_and_failures(
    tmp_path: Path, answer: httpx.Response | Exception, code: int, message: str
) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if isinstance(answer, Exception):
            raise answer
        return answer

    lines: list[tuple[str, bool]] = []
    listener = listen.Listener(
        "http://hb",
        "b1",
        "http://127.0.0.1:9",
        state_path=tmp_path / "s.json",
        echo=lambda text, err=False: lines.append((text, err)),
        connect=lambda url: pytest.fail("must not connect"),
        api=httpx.Client(transport=httpx.MockTransport(handle)),
    )
    assert listener.run() == code
    assert len(lines) == 1 and lines[0][1] is True
    assert message in lines[0][0]


@pytest.mark.parametrize(("status", "code"), [(404, 2), (400, 2), (403, 2), (502, 1)])
def test_stream_handshake_refusals_at_start(tmp_path: Path, status: int, code: int) -> None:
    def connect(url: str) -> FakeSocket:
        raise websocket.WebSocketBadStatusException("no", status)

    listener = listen.Listener(
        "http://hb",
        "b1",
        "http://127.0.0.1:9",
        state_path=tmp_path / "s.json",
        echo=lambda *a, **k: None,
        connect=connect,
        api=fake_api([]),
    )
    assert listener.run() == code


def test_random_bin_ids_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """``hookbin listen -rX...`` would read the bin id as an option: such ids are drawn again."""
    from app.storage import ids

    draws = iter(["-rAbCdEfGhIjKlMnOpQrStU", "rAbCdEfGhIjKlMnOpQrStU"])
    monkeypatch.setattr(ids.secrets, "token_urlsafe", lambda _n: next(draws))
    assert ids.new_bin_id() == "rAbCdEfGhIjKlMnOpQrStU"
