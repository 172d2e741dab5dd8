"""Auto-forward on the bin page, in Debian's Chromium: the forward's state and "Retry now".

Run only these with ``pytest -m browser``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, start_server
from tests.test_browser import (
    Page,
    capture,
    expect,
    open_request,
    wait_for_row,
    wait_until_live,
)
from tests.test_forwarding import Target, forward_state, forwarding_env, wait_until

pytestmark = pytest.mark.browser


@pytest.fixture
def target() -> Iterator[Target]:
    """A forward target whose first answer is a 503, and every later one a 200."""
    made = Target(fail_first=1).start()
    yield made
    made.close()


@pytest.fixture
def one_try_server(sqlite_url: str, tmp_path: Path) -> Iterator[Server]:
    """A server that gives a forward one try only, so a failure shows at once."""
    srv = start_server(sqlite_url, tmp_path, extra_env=forwarding_env(""))
    yield srv
    srv.stop()


def test_a_failed_forward_is_shown_and_retried_from_the_page(
    one_try_server: Server,
    target: Target,
    page: Page,  # after the server: the page closes before the server stops
) -> None:
    """A developer's server was down for the first webhook: the page says so, one click resends."""
    srv = one_try_server
    bin_ = srv.create_bin()
    # Text from the bin's settings and the target's errors ends up on the page: it must stay text.
    url = f"{target.url}/in?<img src=x onerror=window.__pwned=1>"
    patched = httpx.patch(
        f"{srv.url}/api/bins/{bin_['id']}", json={"forward_url": url, "auto_forward": True}
    )
    assert patched.status_code == 200
    page.goto(f"{srv.url}/bins/{bin_['id']}")
    wait_until_live(page)
    request_id = capture(bin_["capture_url"] + "/hook", json={"event": "ping"})
    wait_for_row(page, request_id)
    wait_until(lambda: forward_state(srv, request_id)["state"] == "failed", 10, "the failed try")

    open_request(page, request_id)
    state = page.locator("#forward-state")
    expect(state).to_have_attribute("data-state", "failed")
    expect(state.locator(".forward-summary")).to_have_text(
        "gave up after 1 try: the target answered 503"
    )
    expect(state.locator(".forward-target")).to_have_text(f"to {url}")
    expect(page.locator("#attempts article.attempt .kind")).to_have_text("forward · try 1")

    page.click("#forward-retry")
    # The block reloads itself while pending, and settles on the outcome.
    expect(state).to_have_attribute("data-state", "delivered", timeout=15_000)
    expect(state.locator(".forward-summary")).to_have_text("delivered on try 1")
    expect(page.locator("#forward-retry")).to_have_count(0)
    # The tries listed under the request follow the block, without a reload.
    tries = page.locator("#attempts article.attempt")
    expect(tries).to_have_count(2)
    expect(tries.first.locator(".status")).to_have_text("200")
    assert len(target.received) == 2
    assert page.evaluate("window.__pwned") is None
