"""The console open in a browser page, with what the page reported: errors (a CSP refusal is one) and polls."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from playwright.async_api import Browser, Dialog, Page


class Console:
    """A page showing the console at ``url``; ``errors`` collects console errors and uncaught exceptions, ``dialogs``
    the questions it asked (each answered yes)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.dialogs: list[str] = []  # what confirm() asked; every dialog is accepted
        page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("dialog", self._accept)

    async def _accept(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        await dialog.accept()

    async def value(self, expression: str) -> Any:
        """``expression`` evaluated in the page (through the debugger: the page's CSP forbids eval, rightly)."""
        return await self.page.evaluate(expression)

    async def until(self, expression: str, timeout: float = 20.0) -> None:
        """Wait until ``expression`` is true in the page."""
        deadline = time.monotonic() + timeout
        while not await self.value(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout} s: {expression}")
            await asyncio.sleep(0.05)

    async def polled(self, count: int = 1) -> int:
        """Wait until the console has drawn ``count`` more polls than now; the total."""
        target = await self.polls() + count
        await self.until(f"Number(document.body.dataset.polls || 0) >= {target}")
        return target

    async def polls(self) -> int:
        return int(await self.value("Number(document.body.dataset.polls || 0)"))

    async def texts(self, selector: str) -> list[str]:
        """The text of every element matching ``selector``."""
        return [text.strip() for text in await self.page.locator(selector).all_inner_texts()]

    async def elements(self) -> int:
        return int(await self.value("document.getElementsByTagName('*').length"))


@contextlib.asynccontextmanager
async def open_console(browser: Browser, url: str) -> AsyncIterator[Console]:
    """A new page at ``url`` (the console), closed on leaving."""
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    console = Console(page)
    try:
        await page.goto(url)
        await console.until("Number(document.body.dataset.polls || 0) >= 1")
        yield console
    finally:
        await page.close()
