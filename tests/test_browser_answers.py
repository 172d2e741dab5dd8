"""Response rules in a real browser: set them on the bin page, then watch a sender get answered.

Same machinery as ``tests/test_browser.py`` (Debian's Chromium through Playwright, a real
``hookbin serve``); its fixtures and helpers are reused from there. Run with ``pytest -m browser``.
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import Server
from tests.test_browser import (
    Page,
    create_bin_from_home_page,
    expect,
    open_request,
    wait_for_row,
)

pytestmark = pytest.mark.browser

RULES = [
    {
        "id": "fail-once",
        "method": "POST",
        "path": "/stripe/*",
        "fail_first": {"count": 1, "status": 503},
        "answer": {
            "status": 202,
            "content_type": "application/json",
            "body": '{"thanks": {{ json.id|tojson }}}',
        },
    }
]


def test_set_a_rule_on_the_page_and_see_requests_answered_by_it(
    page: Page,
    shared_server: Server,
) -> None:
    """A developer wants to see how their sender retries: the first delivery fails with 503,
    the retry gets a 202. They type the rule into the bin's settings (fixing a typo on the way)
    and see, for each request, what it was answered and by which rule."""
    capture_url = create_bin_from_home_page(page, shared_server)

    page.click("#responses summary")
    # A typo first: the error shows next to the form, and what was typed is still there.
    typo = json.dumps(RULES)[:-2]
    page.fill("#resp-rules", typo)
    page.fill("#resp-status", "200")
    page.click("#save-settings")
    expect(page.locator("#responses-error")).to_contain_text("rules are not valid JSON")
    expect(page.locator("#resp-rules")).to_have_value(typo)
    expect(page.locator("#resp-status")).to_have_value("200")
    expect(page.locator("#settings .saved")).to_have_count(0)

    page.fill("#resp-rules", json.dumps(RULES, indent=2))
    page.fill("#resp-status", "")
    page.click("#save-settings")
    expect(page.locator("#settings .saved")).to_be_visible()
    expect(page.locator("#responses-error")).to_have_count(0)
    expect(page.locator("#responses summary .badge")).to_have_text("custom")

    event = {"id": "evt_1Pq9", "type": "invoice.paid"}
    first = httpx.post(capture_url + "/stripe/webhook", json=event, timeout=10)
    assert first.status_code == 503
    assert "fail-once" in first.json()["error"]
    retry = httpx.post(capture_url + "/stripe/webhook", json=event, timeout=10)
    assert retry.status_code == 202
    assert retry.json() == {"thanks": "evt_1Pq9"}
    other = httpx.post(capture_url + "/github", json=event, timeout=10)
    assert other.status_code == 200 and other.json()["ok"] is True

    first_id = first.headers["x-hookbin-request-id"]
    retry_id = retry.headers["x-hookbin-request-id"]
    other_id = other.headers["x-hookbin-request-id"]
    wait_for_row(page, other_id)
    expect(page.locator(f"#req-{first_id} .badge.answered")).to_have_text(
        "answered 503 · rule fail-once"
    )
    expect(page.locator(f"#req-{retry_id} .badge.answered")).to_have_text(
        "answered 202 · rule fail-once"
    )
    # The plain acknowledgement needs no badge.
    expect(page.locator(f"#req-{other_id} .badge.answered")).to_have_count(0)

    open_request(page, first_id)
    expect(page.locator("#answered")).to_have_text("503 · rule fail-once")

    # After a reload, the settings show the saved rule (with its id) for the next edit.
    page.reload()
    expect(page.locator("#responses")).to_have_attribute("open", "")
    assert json.loads(page.input_value("#resp-rules"))[0]["id"] == "fail-once"
