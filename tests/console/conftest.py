"""A real headless Chromium (Debian's ``chromium``, driven by Playwright) for the console's tests."""

import os
import shutil
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright

CHROMIUM = "/usr/bin/chromium"
# Flags for a machine with no network beyond loopback: nothing started in the background that would try to reach out.
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Chromium, started for the test; missing, the test is skipped, but fails with ``CI=true`` (``make install``
    installs it)."""
    if shutil.which(CHROMIUM) is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {CHROMIUM} is missing: make install installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is missing")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield launched
        finally:
            await launched.close()
