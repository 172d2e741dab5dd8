"""The bin page in a real browser: Debian's Chromium driven by Playwright.

Each test is one user story, told the way a user would live it: open the page, watch requests
arrive, open one, replay it. The servers are real ``hookbin serve`` processes (see conftest), the
requests come from outside the page (httpx or raw sockets in the test), so the live list, the
htmx swaps, the websocket reconnects and the escaping of captured data are all checked end to end.

Run only these with ``pytest -m browser``. Set ``HOOKBIN_SCREENSHOT=1`` to also refresh
``docs/screenshot.png`` for the README.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    PUSH_ONLY,
    ROOT,
    WAIT_MS,
    Server,
    browser_api,
    raw_http,
    start_server,
)
from tests.echo import EchoTarget, start_echo

pytestmark = pytest.mark.browser

sync_api = browser_api()
expect = sync_api.expect
Page = sync_api.Page


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def echo() -> Iterator[EchoTarget]:
    """A local target that answers 201, a JSON echo of what it got, and ``X-Echo: yes``."""
    target = start_echo()
    target.extra_headers = [("X-Echo", "yes")]
    yield target
    target.close()


# -- helpers ---------------------------------------------------------------------------------------


def create_bin_from_home_page(page: Page, server: Server) -> str:
    """Open ``/``, press "Create a bin", wait until the bin page is live; return its capture URL."""
    page.goto(server.url + "/")
    page.click("#create-bin")
    page.wait_for_url("**/bins/*")
    wait_until_live(page)
    return page.input_value("#capture-url")


def wait_until_live(page: Page, timeout: float = WAIT_MS) -> None:
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live", timeout=timeout)


def row_ids(page: Page) -> list[str]:
    """The data-ids of the rows in the request list, top to bottom."""
    return page.eval_on_selector_all("#request-list a.row", "rows => rows.map(r => r.dataset.id)")


def wait_for_row(page: Page, request_id: str, timeout: float = WAIT_MS) -> None:
    page.wait_for_selector(f"#req-{request_id}", state="attached", timeout=timeout)


def capture(url: str, **kwargs) -> str:
    """Send one request to a capture URL from outside the page; return the stored request id."""
    response = httpx.request(kwargs.pop("method", "POST"), url, timeout=10, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()["request_id"]


def open_request(page: Page, request_id: str) -> None:
    """Click a row and wait for its detail to load in the right-hand pane."""
    page.click(f"#req-{request_id}")
    page.wait_for_selector(f"#detail .detail[data-id='{request_id}']")


JSON_EVENT = {
    "event": "invoice.paid",
    "id": "evt_1Pq9",
    "data": {"amount": 4200, "currency": "eur", "customer": {"email": "ada@example.com"}},
    "livemode": False,
}


def send_three_requests(capture_url: str) -> Iterator[str]:
    """The three requests of the first story, one at a time: JSON, a form, bytes 0..255.

    A generator: each request is sent only when the caller asks for the next id.
    """
    yield capture(
        capture_url + "/stripe/webhook?attempt=1&source=dashboard",
        json=JSON_EVENT,
        headers={"Stripe-Signature": "t=1700000000,v1=5257a869e7ec"},
    )
    yield capture(
        capture_url + "/slack/command",
        data={"command": "/deploy", "text": "api to production", "user_name": "ada"},
    )
    yield capture(
        capture_url + "/upload/blob.bin",
        method="PUT",
        content=bytes(range(256)),
        headers={"Content-Type": "application/octet-stream"},
    )


# -- 1. the first visit ----------------------------------------------------------------------------


def test_create_bin_and_watch_requests_arrive_live(page: Page, shared_server: Server) -> None:
    """A new user makes a bin and sees each request pop in at the top, without reloading."""
    capture_url = create_bin_from_home_page(page, shared_server)
    assert capture_url.startswith(shared_server.url + "/h/")
    expect(page.locator("#request-count")).to_have_text("0")
    expect(page.locator("#empty-note")).to_be_visible()

    # A reload would wipe this; it must still be there at the end.
    page.evaluate("window.__marker = 1")

    sent: list[str] = []
    for request_id in send_three_requests(capture_url):
        sent.append(request_id)
        wait_for_row(page, request_id)
        # Newest first, and nothing but what was sent so far.
        assert row_ids(page) == sent[::-1]

    expect(page.locator("#request-count")).to_have_text("3")
    expect(page.locator("#empty-note")).to_be_hidden()
    json_row, form_row, binary_row = (page.locator(f"#req-{rid}") for rid in sent)
    expect(json_row.locator(".method")).to_have_text("POST")
    expect(json_row.locator(".path")).to_have_text("/stripe/webhook?attempt=1&source=dashboard")
    expect(json_row.locator(".ctype")).to_have_text("application/json")
    expect(form_row.locator(".path")).to_have_text("/slack/command")
    expect(form_row.locator(".ctype")).to_have_text("application/x-www-form-urlencoded")
    expect(binary_row.locator(".method")).to_have_text("PUT")
    expect(binary_row.locator(".ctype")).to_have_text("application/octet-stream")

    assert page.evaluate("window.__marker") == 1, "the page was reloaded"
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")


# -- 2. replay -------------------------------------------------------------------------------------


def test_open_request_and_replay_to_local_echo_server(
    page: Page, shared_server: Server, echo: EchoTarget
) -> None:
    """A developer opens a captured webhook, reads it, and replays it to a local dev server."""
    capture_url = create_bin_from_home_page(page, shared_server)
    body = json.dumps(JSON_EVENT).encode()
    request_id = capture(
        capture_url + "/stripe/webhook?attempt=1",
        content=body,
        headers={"Content-Type": "application/json", "X-Story": "replay"},
    )
    wait_for_row(page, request_id)

    open_request(page, request_id)
    detail = page.locator("#detail .detail")
    expect(detail.locator(".detail-head .method")).to_have_text("POST")
    expect(detail.locator(".detail-head .path")).to_have_text("/stripe/webhook?attempt=1")
    headers = detail.locator("table.headers")
    expect(headers.locator("tr", has_text="X-Story")).to_contain_text("replay")
    expect(headers.locator("tr", has_text="Content-Type")).to_contain_text("application/json")
    expect(detail.locator(".view-json pre")).to_have_text(
        json.dumps(JSON_EVENT, indent=2, ensure_ascii=False)
    )
    expect(page.locator(f"#req-{request_id}")).to_have_class("row selected")
    expect(page.locator("#attempts")).to_contain_text("Not replayed yet.")

    page.fill("#replay-url", echo.url)
    page.click("#replay-button")

    attempt = page.locator("#attempts article.attempt")
    expect(attempt).to_have_count(1)
    expect(attempt.locator(".status")).to_have_text("201")
    expect(attempt.locator(".url")).to_have_text(f"POST {echo.url}")
    echoed = json.loads(attempt.locator("pre.body-text").inner_text())
    assert echoed == {"method": "POST", "path": "/stripe/webhook?attempt=1", "body_size": len(body)}
    attempt.locator("summary", has_text="Answer headers").click()
    expect(attempt.locator("table.kv tr", has_text="X-Echo")).to_have_text("X-Echoyes")

    [received] = echo.wait_for(1)
    assert received.method == "POST"
    assert received.path == "/stripe/webhook?attempt=1"
    assert received.body == body
    assert ("X-Story", "replay") in received.headers


def test_delete_one_request_from_its_shared_link(page: Page, shared_server: Server) -> None:
    """Someone opens a request from a shared link, deletes it, and the page forgets it: the row,
    the detail pane, the count and the address bar all move on."""
    capture_url = create_bin_from_home_page(page, shared_server)
    keep = capture(capture_url + "/keep", content=b"keep")
    doomed = capture(capture_url + "/doomed", content=b"doomed")
    wait_for_row(page, doomed)
    bin_id = capture_url.rstrip("/").rsplit("/", 1)[-1]

    page.goto(f"{shared_server.url}/bins/{bin_id}/r/{doomed}")
    wait_until_live(page)
    expect(page.locator("#request-count")).to_have_text("2")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete-request")

    expect(page.locator(f"#req-{doomed}")).to_have_count(0)
    expect(page.locator("#detail")).to_contain_text("Request deleted")
    expect(page.locator("#request-count")).to_have_text("1")
    assert page.url == f"{shared_server.url}/bins/{bin_id}"
    assert row_ids(page) == [keep]
    assert httpx.get(f"{shared_server.url}/api/requests/{doomed}").status_code == 404

    # The live list still works after the swap.
    later = capture(capture_url + "/later", content=b"later")
    wait_for_row(page, later)
    expect(page.locator("#request-count")).to_have_text("2")


def test_signing_secret_badges_and_duplicates(page: Page, shared_server: Server) -> None:
    """A developer pastes their GitHub secret into the bin, and sees at a glance which
    deliveries are genuine and which are repeats of one they already have."""
    import hashlib
    import hmac

    capture_url = create_bin_from_home_page(page, shared_server)
    page.select_option("#signing-provider", "github")
    page.fill("#signing-secrets", "s3cret")
    page.click("#save-settings")
    expect(page.locator("#settings .saved")).to_be_visible()

    body = b'{"action": "opened"}'
    good = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    first = capture(
        capture_url,
        content=body,
        headers={"X-Hub-Signature-256": good, "X-GitHub-Delivery": "d-42"},
    )
    forged = capture(
        capture_url,
        content=body,
        headers={"X-Hub-Signature-256": "sha256=" + "0" * 64, "X-GitHub-Delivery": "d-42"},
    )
    wait_for_row(page, forged)
    expect(page.locator(f"#req-{first} .badge.sig-valid")).to_have_text("github valid")
    expect(page.locator(f"#req-{forged} .badge.sig-invalid")).to_have_text("github invalid")
    expect(page.locator(f"#req-{forged} .badge.dup")).to_be_visible()
    expect(page.locator(f"#req-{first} .badge.dup")).to_have_count(0)

    open_request(page, forged)
    expect(page.locator("#signature")).to_contain_text("different secret")
    page.click("#duplicate-of")
    page.wait_for_selector(f"#detail .detail[data-id='{first}']")
    expect(page.locator("#signature")).to_contain_text("github valid")


# -- 3. a server restart ---------------------------------------------------------------------------


def test_reconnect_fills_in_missed_requests(page: Page, sqlite_url: str, tmp_path: Path) -> None:
    """The server behind the page restarts; the page reconnects and catches up on its own.

    Two Hookbin processes share one SQLite file: A serves the page, B takes the captures. B's
    captures reaching the page live prove the cross-process push; B capturing while A is down
    proves the page asks for what it missed when it comes back.
    """
    server_a = start_server(sqlite_url, tmp_path, extra_env=PUSH_ONLY)
    server_b = start_server(sqlite_url, tmp_path, extra_env=PUSH_ONLY)
    try:
        bin_ = server_a.create_bin()
        capture_via_b = f"{server_b.url}/h/{bin_['id']}"
        page.goto(f"{server_a.url}/bins/{bin_['id']}")
        wait_until_live(page)
        # htmx's own back-off waits up to 2**n seconds after the n-th failed try; a steady quarter
        # of a second keeps the story short and still leaves the reconnecting to the page.
        page.evaluate(
            """() => {
                htmx.config.wsReconnectDelay = () => 250;
                window.__marker = 1;
                window.__states = [];
                const status = document.getElementById("live-status");
                new MutationObserver(() => window.__states.push(status.dataset.state))
                    .observe(status, {attributes: true, attributeFilter: ["data-state"]});
            }"""
        )

        first = [capture(f"{capture_via_b}/before/{n}", json={"n": n}) for n in (1, 2)]
        for request_id in first:
            wait_for_row(page, request_id)
        assert row_ids(page) == first[::-1]

        server_a.stop()
        page.wait_for_function("window.__states.includes('down')")
        expect(page.locator("#live-status")).not_to_have_attribute("data-state", "live")

        missed = [capture(f"{capture_via_b}/while-down/{n}", json={"n": n}) for n in (3, 4, 5)]

        server_a = start_server(sqlite_url, tmp_path, port=server_a.port, extra_env=PUSH_ONLY)
        wait_until_live(page)
        for request_id in missed:
            wait_for_row(page, request_id)

        ids = row_ids(page)
        assert ids == (first + missed)[::-1]
        assert len(set(ids)) == 5
        expect(page.locator("#request-count")).to_have_text("5")
        assert page.evaluate("window.__marker") == 1, "the page was reloaded"
    finally:
        server_a.stop()
        server_b.stop()


# -- 4. hostile input ------------------------------------------------------------------------------

SCRIPT = "<script>window.__pwned=1</script>"
IMG = '<img src=x onerror="window.__pwned=1">'
HTMX_OOB = '<div hx-get="/api/bins" hx-trigger="load" hx-swap-oob="true" id="request-list">x</div>'
SVG = '<svg onload="window.__pwned=1">'
TEMPLATE = "{{7*7}}"
ATTR_BREAK = '" autofocus onfocus="window.__pwned=1'
PAYLOADS = [SCRIPT, IMG, HTMX_OOB, SVG, TEMPLATE, ATTR_BREAK]
#: Request lines cannot carry spaces, so the path and query get space-free variants.
PATH_PAYLOAD = "/<script>window.__pwned=1</script>/<svg/onload=window.__pwned=1>/{{7*7}}"
QUERY_PAYLOAD = 'q=<img/src=x/onerror=window.__pwned=1>&t={{7*7}}&a="autofocus/onfocus="x'
#: Header names are RFC 9110 tokens (gunicorn answers 400 to anything else), so the hostile name
#: uses every token character that means something in HTML or templates.
HEADER_NAME_PAYLOAD = "X-Pwn'`|~!#$%&*+.^_"
HOSTILE_CONTENT_TYPE = f'text/html; charset=utf-8; x="{SCRIPT}"; y={TEMPLATE}'
HOSTILE_HTML = (
    f"<!doctype html><html><body>{SCRIPT}{IMG}{HTMX_OOB}{SVG}</svg>{TEMPLATE}"
    f'<input value="{ATTR_BREAK}"></body></html>'
)
HOSTILE_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" onload="window.__pwned=1">'
    f"{SCRIPT}<foreignObject>{IMG}</foreignObject></svg>"
)


@dataclass
class HostileTarget:
    """A replay target whose answer is an HTML page with a script plus htmx control headers."""

    server: ThreadingHTTPServer
    received: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


HOSTILE_ANSWER = f"<html><body>{SCRIPT}{IMG}<h1>{TEMPLATE}</h1></body></html>".encode()
HOSTILE_ANSWER_HEADERS = [
    ("Content-Type", "text/html; charset=utf-8"),
    ("HX-Trigger", "pwn"),
    ("HX-Redirect", "/evil"),
    ("HX-Refresh", "true"),
    ("HX-Location", "/evil"),
    ("HX-Retarget", "body"),
    ("X-Payload", IMG),
]


@pytest.fixture
def hostile_target() -> Iterator[HostileTarget]:
    """A local target answering 200 with ``HOSTILE_ANSWER`` and ``HOSTILE_ANSWER_HEADERS``."""
    target: HostileTarget

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            target.received.append(self.path)
            self.send_response(200)
            for name, value in HOSTILE_ANSWER_HEADERS:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(HOSTILE_ANSWER)))
            self.end_headers()
            self.wfile.write(HOSTILE_ANSWER)

        do_GET = do_POST = do_PUT = _handle  # noqa: N815

        def log_message(self, *_args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    target = HostileTarget(httpd)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield target
    target.close()


def _raw_capture(server: Server, bin_id: str) -> None:
    """Path, query, header names and values straight off the wire, unencoded."""
    body = json.dumps({p: p for p in PAYLOADS}, ensure_ascii=False).encode()
    head = [
        f"POST /h/{bin_id}{PATH_PAYLOAD}?{QUERY_PAYLOAD} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"{HEADER_NAME_PAYLOAD}: {TEMPLATE}",
        *(f"X-Payload-{n}: {p}" for n, p in enumerate(PAYLOADS)),
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    answer = raw_http(server.port, ("\r\n".join(head) + "\r\n\r\n").encode() + body)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


def _multipart_body(boundary: str) -> bytes:
    """Built by hand so the filename reaches Hookbin byte for byte (clients would escape it)."""
    return (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{SCRIPT}"\r\n\r\n'
        f"{IMG}\r\n"
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="upload"; filename="<svg onload=window.__pwned=1>{TEMPLATE}.svg"\r\n'  # noqa: E501
        "Content-Type: image/svg+xml\r\n\r\n"
        f"{HOSTILE_SVG}\r\n"
        f"--{boundary}--\r\n"
    ).encode()


def send_hostile_requests(server: Server, bin_id: str, part: int) -> None:
    """Part 0 lands before the page opens (server-rendered); part 1 arrives over the websocket."""
    url = f"{server.url}/h/{bin_id}"
    if part == 0:
        _raw_capture(server, bin_id)
        capture(url + "/form", data={p: p for p in PAYLOADS})
        boundary = "hookbin-boundary-7e3f"
        capture(
            url + "/multipart",
            content=_multipart_body(boundary),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
    else:
        capture(
            url + "/page.html", content=HOSTILE_HTML.encode(), headers={"Content-Type": "text/html"}
        )
        capture(
            url + "/image.svg",
            content=HOSTILE_SVG.encode(),
            headers={"Content-Type": "image/svg+xml"},
        )
        capture(
            url + "/ctype", content=SCRIPT.encode(), headers={"Content-Type": HOSTILE_CONTENT_TYPE}
        )
        _raw_capture(server, bin_id)


#: Text that must be readable in each detail pane, keyed by the request's path (as listed).
EXPECTED_TEXT = {
    PATH_PAYLOAD: [PATH_PAYLOAD, QUERY_PAYLOAD, HEADER_NAME_PAYLOAD, *PAYLOADS],
    "/form": PAYLOADS,
    "/multipart": [SCRIPT, IMG, f"<svg onload=window.__pwned=1>{TEMPLATE}.svg", HOSTILE_SVG],
    "/page.html": [HOSTILE_HTML],
    "/image.svg": [HOSTILE_SVG],
    "/ctype": [HOSTILE_CONTENT_TYPE, SCRIPT],
}


def test_hostile_payloads_never_run(
    page: Page, shared_server: Server, hostile_target: HostileTarget
) -> None:
    """Everything a stranger sends is shown as text: nothing runs, nothing becomes htmx markup."""
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    requested: list[str] = []
    page.on("request", lambda request: requested.append(f"{request.method} {request.url}"))
    # Runs before any page script and is exempt from the CSP, so it sees every violation: a
    # payload blocked by the CSP (rather than escaped) is still a bug.
    page.add_init_script(
        """window.__violations = [];
        document.addEventListener("securitypolicyviolation",
            e => window.__violations.push(e.violatedDirective + " " + e.blockedURI));
        document.addEventListener("pwn", () => { window.__hxTriggered = true; });"""
    )

    bin_ = shared_server.create_bin()
    send_hostile_requests(shared_server, bin_["id"], part=0)

    bin_page = f"{shared_server.url}/bins/{bin_['id']}"
    response = page.goto(bin_page)
    assert response is not None
    csp = response.headers["content-security-policy"]
    assert f"script-src {shared_server.url}/static/" in csp
    assert "'unsafe-inline'" not in csp
    assert "'unsafe-eval'" not in csp
    wait_until_live(page)
    page.evaluate("window.__marker = 1")

    send_hostile_requests(shared_server, bin_["id"], part=1)
    expect(page.locator("#request-list a.row")).to_have_count(7)
    expect(page.locator("#request-count")).to_have_text("7")
    expect(page.locator("#request-list")).to_have_count(1)

    # Every listed path and content type reads exactly as sent.
    list_text = page.locator("#request-list").inner_text()
    for text in (PATH_PAYLOAD, QUERY_PAYLOAD, "/form", "/multipart", "/page.html", "/ctype"):
        assert text in list_text
    assert HOSTILE_CONTENT_TYPE in list_text

    for request_id in row_ids(page):
        open_request(page, request_id)
        detail = page.locator("#detail .detail")
        path = detail.locator(".detail-head .path").inner_text().split("?")[0]
        shown = detail.inner_text()
        for text in EXPECTED_TEXT[path]:
            assert text in shown, f"{text!r} is not shown as text for {path}"

    # Replay the first hostile request to a target that answers with script and htmx headers.
    page.fill("#replay-url", hostile_target.url)
    page.click("#replay-button")
    attempt = page.locator("#attempts article.attempt")
    expect(attempt.locator(".status")).to_have_text("200")
    expect(attempt.locator("pre.body-text")).to_have_text(HOSTILE_ANSWER.decode())
    answer_headers = attempt.locator("table.kv").text_content() or ""
    for name, value in HOSTILE_ANSWER_HEADERS:
        assert name in answer_headers and value in answer_headers
    assert len(hostile_target.received) == 1

    # Nothing ran, nothing was injected, nothing navigated.
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.evaluate("window.__hxTriggered === undefined"), "HX-Trigger from a target fired"
    assert page.evaluate("window.__marker") == 1, "the page was reloaded (HX-Refresh?)"
    assert "/evil" not in page.url
    assert page.url.startswith(bin_page)
    assert dialogs == []
    injected = page.locator(
        "#request-list script, #request-list img, #request-list svg, #request-list div,"
        " #detail script, #detail img, #detail svg, #detail iframe, #detail input:not(#replay-url),"
        " [onerror], [onload], [onfocus], [autofocus], [hx-trigger], [hx-swap-oob]"
    )
    expect(injected).to_have_count(0)
    assert page.evaluate("window.__violations") == []
    strays = [r for r in requested if "/api/bins" in r or "/evil" in r or "://x" in r]
    assert strays == []


# -- 5. the README screenshot ----------------------------------------------------------------------


@pytest.mark.skipif(
    os.environ.get("HOOKBIN_SCREENSHOT") != "1",
    reason="set HOOKBIN_SCREENSHOT=1 to refresh docs/screenshot.png",
)
def test_readme_screenshot(page: Page, shared_server: Server) -> None:
    """docs/screenshot.png: the first story's three requests, the JSON one opened."""
    capture_url = create_bin_from_home_page(page, shared_server)
    json_id, *others = list(send_three_requests(capture_url))
    for request_id in [json_id, *others]:
        wait_for_row(page, request_id)
    open_request(page, json_id)
    expect(page.locator("#detail .view-json pre")).to_be_visible()
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")

    target = ROOT / "docs" / "screenshot.png"
    target.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(target))
    assert target.stat().st_size > 10_000
