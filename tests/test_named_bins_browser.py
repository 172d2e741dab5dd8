"""Named bins in Chromium: naming a bin on the home page, and what a mistake looks like there.

Kept apart from ``test_named_bins.py`` so that a machine without Playwright or Chromium skips only
these stories.
"""

from __future__ import annotations

import secrets

import pytest

from tests.conftest import WAIT_MS, Server
from tests.test_browser import Page, expect, wait_until_live

pytestmark = pytest.mark.browser


def test_name_a_bin_on_the_home_page(page: Page, shared_server: Server) -> None:
    """A developer wants a URL they can paste into Stripe once and keep: they name the bin, fix
    the name when it is refused, and land on a live bin at /h/<name>."""
    name = f"stripe-dev-{secrets.token_hex(3)}"
    page.goto(shared_server.url + "/")

    page.fill("#bin-name", "Stripe Dev")
    page.click("#create-bin")
    expect(page.locator("#bin-name-error")).to_contain_text("is not a valid bin name")
    expect(page.locator("#bin-name-error")).to_contain_text("3 to 63 characters")
    expect(page.locator("#bin-name")).to_have_value("Stripe Dev")
    expect(page.locator("#bin-name")).to_have_attribute("aria-invalid", "true")

    page.fill("#bin-name", name)
    page.click("#create-bin")
    page.wait_for_url(f"**/bins/{name}", timeout=WAIT_MS)
    wait_until_live(page)
    expect(page.locator("#capture-url")).to_have_value(f"{shared_server.url}/h/{name}")

    # The name is now taken: a second try says so and keeps the name for editing.
    page.goto(shared_server.url + "/")
    page.fill("#bin-name", name)
    page.click("#create-bin")
    expect(page.locator("#bin-name-error")).to_contain_text("exists already")
    expect(page.locator("#bin-name")).to_have_value(name)
