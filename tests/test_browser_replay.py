"""Edit & replay, re-sign and diff in a real browser (Debian's Chromium through Playwright).

Same setting as ``tests/test_browser.py``, whose fixtures and helpers this file reuses: a real
``hookbin serve``, requests sent from outside the page, and a local echo target that records
what it receives. Run only the browser tests with ``pytest -m browser``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest

from tests import test_browser
from tests.conftest import Server
from tests.echo import EchoTarget
from tests.test_browser import (
    JSON_EVENT,
    PATH_PAYLOAD,
    PAYLOADS,
    QUERY_PAYLOAD,
    Page,
    capture,
    expect,
    open_request,
    wait_for_row,
    wait_until_live,
)

# The browser stories' echo target (Chromium and the page come from conftest).
echo = test_browser.echo

pytestmark = pytest.mark.browser


def _open_bin(page: Page, server: Server, bin_id: str) -> None:
    page.goto(f"{server.url}/bins/{bin_id}")
    wait_until_live(page)


def _open_edit_form(page: Page, request_id: str) -> None:
    open_request(page, request_id)
    page.click("#edit-replay-button")
    page.wait_for_selector("#edit-replay-form")


def _background(page: Page, selector: str) -> str:
    return page.eval_on_selector(selector, "el => getComputedStyle(el).backgroundColor")


def test_edit_replay_and_diff(page: Page, shared_server: Server, echo: EchoTarget) -> None:
    """A developer changes a header and the JSON body of a captured webhook, sends it to the
    local dev server, reads its answer, then looks at exactly what changed."""
    bin_ = shared_server.create_bin()
    _open_bin(page, shared_server, bin_["id"])
    original = json.dumps(JSON_EVENT).encode()
    request_id = capture(
        bin_["capture_url"] + "/stripe/webhook?attempt=1",
        content=original,
        headers={"Content-Type": "application/json", "X-Story": "original"},
    )
    other_id = capture(bin_["capture_url"] + "/other", content=b"plain text")
    wait_for_row(page, other_id)
    _open_edit_form(page, request_id)

    form = page.locator("#edit-replay-form")
    expect(form.locator("#edit-method")).to_have_value("POST")
    expect(form.locator("#edit-path")).to_have_value("/stripe/webhook")
    expect(form.locator("#edit-query")).to_have_value("attempt=1")
    headers = form.locator("#edit-headers").input_value()
    assert "X-Story: original" in headers.splitlines()
    assert not any(line.startswith("Host:") for line in headers.splitlines())
    assert json.loads(form.locator("#edit-body").input_value()) == JSON_EVENT
    expect(form.locator("#edit-resign")).to_be_disabled()  # this bin has no signing secret

    edited_event = {**JSON_EVENT, "data": {**JSON_EVENT["data"], "amount": 9900}}
    edited_body = json.dumps(edited_event, indent=2)  # several lines: line endings matter
    form.locator("#edit-headers").fill(headers.replace("X-Story: original", "X-Story: edited"))
    form.locator("#edit-body").fill(edited_body)
    form.locator("#edit-url").fill(echo.url + "/dev")
    form.locator("#edit-send").click()

    attempt = page.locator("#attempts article.attempt")
    expect(attempt).to_have_count(1)
    expect(attempt.locator(".status")).to_have_text("201")
    expect(attempt.locator(".badge.edited")).to_be_visible()
    echoed = json.loads(attempt.locator("pre.body-text").inner_text())
    assert echoed == {
        "method": "POST",
        "path": "/dev/stripe/webhook?attempt=1",
        "body_size": len(edited_body.encode()),
    }

    [received] = echo.wait_for(1)
    assert received.body == edited_body.encode()  # LF as typed, not the textarea's CRLF
    assert [v for n, v in received.headers if n == "X-Story"] == ["edited"]
    assert ("Content-Type", "application/json") in received.headers

    # The attempt's Diff: the edited header and the changed JSON key are highlighted.
    attempt.locator("a.diff-link").click()
    page.wait_for_url("**/diff?*")
    headers_section = page.locator("[data-section=headers]")
    changed_header = headers_section.locator("tr.changed")
    expect(changed_header).to_have_count(1)
    expect(changed_header.locator("td.old")).to_have_text("X-Story: original")
    expect(changed_header.locator("td.new")).to_have_text("X-Story: edited")
    expect(changed_header.locator("td.new .chg")).to_have_text("edited")
    body_section = page.locator("[data-section=body]")
    expect(body_section).to_have_attribute("data-same", "no")
    changed_body = body_section.locator("tr.changed")
    expect(changed_body).to_have_count(1)
    expect(changed_body.locator("td.old")).to_have_text('    "amount": 4200,')
    expect(changed_body.locator("td.new")).to_have_text('    "amount": 9900,')
    # Highlighted for real: the changed cell is painted, an equal one is not.
    equal_cell = "[data-section=body] tr.equal td.new"
    assert _background(page, "[data-section=body] tr.changed td.new") != _background(
        page, equal_cell
    )
    assert _background(page, "[data-section=body] tr.changed td.new .chg") not in (
        "rgba(0, 0, 0, 0)",
        "transparent",
    )

    # Compare with another request of the bin, picked from the list.
    page.click("#diff-picker summary")
    page.click(f"a.pick-request[data-id='{other_id}']")
    page.wait_for_url(f"**b={other_id}")
    expect(page.locator("[data-section=request-line] tr.changed")).to_have_count(1)
    expect(page.locator("#diff-right")).to_contain_text(other_id)


def test_resign_checkbox_signs_the_edited_request(
    page: Page,
    shared_server: Server,
    echo: EchoTarget,
) -> None:
    """With a secret on the bin, Re-sign is offered (and ticked for a signed request): the dev
    server's Stripe library accepts the edited request although the capture is an hour old."""
    import httpx
    import stripe

    secret = "whsec_browser_test"
    bin_ = shared_server.create_bin()
    response = httpx.patch(
        f"{shared_server.url}/api/bins/{bin_['id']}",
        json={"signing": {"provider": "auto", "secrets": [secret]}},
    )
    assert response.status_code == 200
    _open_bin(page, shared_server, bin_["id"])
    body = json.dumps(JSON_EVENT).encode()
    stale = int(time.time()) - 3600
    mac = hmac.new(secret.encode(), f"{stale}.".encode() + body, hashlib.sha256).hexdigest()
    request_id = capture(
        bin_["capture_url"],
        content=body,
        headers={"Content-Type": "application/json", "Stripe-Signature": f"t={stale},v1={mac}"},
    )
    wait_for_row(page, request_id)
    _open_edit_form(page, request_id)

    resign = page.locator("#edit-resign")
    expect(resign).to_be_enabled()
    expect(resign).to_be_checked()
    expect(page.locator("#edit-replay-form label.resign")).to_contain_text("stripe")
    edited = json.dumps({**JSON_EVENT, "livemode": True})
    page.fill("#edit-body", edited)
    page.fill("#edit-url", echo.url)
    page.click("#edit-send")

    attempt = page.locator("#attempts article.attempt")
    expect(attempt.locator(".status")).to_have_text("201")
    expect(attempt.locator(".badge.resigned")).to_have_text("re-signed (stripe)")
    [received] = echo.wait_for(1)
    assert received.body == edited.encode()
    [signature] = [v for n, v in received.headers if n.lower() == "stripe-signature"]
    event = stripe.Webhook.construct_event(received.body, signature, secret)
    assert event["livemode"] is True


def test_edit_form_starts_from_the_typed_target(
    page: Page, shared_server: Server, echo: EchoTarget
) -> None:
    """A developer types their dev server next to Replay, then opens Edit & replay: the form
    sends there too, and the bin's forward target field shows the target used last."""
    bin_ = shared_server.create_bin()
    _open_bin(page, shared_server, bin_["id"])
    request_id = capture(bin_["capture_url"] + "/hook", json=JSON_EVENT)
    wait_for_row(page, request_id)
    open_request(page, request_id)
    page.fill("#replay-url", echo.url + "/typed")
    page.click("#edit-replay-button")
    expect(page.locator("#edit-url")).to_have_value(echo.url + "/typed")

    page.click("#edit-send")
    expect(page.locator("#attempts article.attempt .status")).to_have_text("201")
    assert echo.wait_for(1)[0].path == "/typed/hook"
    # Saving the settings afterwards must not put the previous target back.
    expect(page.locator("#forward-url")).to_have_value(echo.url + "/typed")


def test_hostile_request_in_the_edit_form_and_the_diff(
    page: Page, shared_server: Server, echo: EchoTarget
) -> None:
    """What a stranger sent is prefilled into form fields and compared line by line: it is
    shown as text there too, and nothing of it runs or becomes markup."""
    page.add_init_script(
        """window.__violations = [];
        document.addEventListener("securitypolicyviolation",
            e => window.__violations.push(e.violatedDirective + " " + e.blockedURI));"""
    )
    bin_ = shared_server.create_bin()
    _open_bin(page, shared_server, bin_["id"])
    test_browser._raw_capture(shared_server, bin_["id"])  # path, query, headers and body
    other_id = capture(bin_["capture_url"] + "/other", content=b"plain")
    wait_for_row(page, other_id)
    [hostile_id] = [r for r in test_browser.row_ids(page) if r != other_id]

    _open_edit_form(page, hostile_id)
    assert json.loads(page.locator("#edit-body").input_value()) == {p: p for p in PAYLOADS}
    expect(page.locator("#edit-path")).to_have_value(PATH_PAYLOAD)
    expect(page.locator("#edit-query")).to_have_value(QUERY_PAYLOAD)
    headers = page.locator("#edit-headers").input_value().splitlines()
    for n, payload in enumerate(PAYLOADS):
        assert f"X-Payload-{n}: {payload}" in headers
    page.fill("#edit-url", echo.url)
    page.click("#edit-send")
    expect(page.locator("#attempts article.attempt .status")).to_have_text("201")

    page.goto(f"{shared_server.url}/bins/{bin_['id']}/diff?a={hostile_id}&b={other_id}")
    shown = page.locator("main").inner_text()
    for text in (PATH_PAYLOAD, QUERY_PAYLOAD, *PAYLOADS):
        assert text in shown, f"{text!r} is not shown as text on the diff page"
    page.goto(f"{shared_server.url}/bins/{bin_['id']}/diff?a={other_id}")
    expect(page.locator(f"a.pick-request[data-id='{hostile_id}']")).to_contain_text(PATH_PAYLOAD)

    assert page.evaluate("typeof window.__pwned") == "undefined"
    injected = page.locator(
        "main script, main img, main svg, main iframe, main input, [onerror], [onload],"
        " [onfocus], [autofocus], [hx-trigger], [hx-get], [hx-swap-oob]"
    )
    expect(injected).to_have_count(0)
    assert page.evaluate("window.__violations") == []
