"""The console in a real headless Chromium, against the real API around the fake controller: at ten backends and
at 10,000. What an operator does: read the overview, find the problems first, search, page, open a service's
backends, act on one; and the page draws a bounded number of elements whatever the size."""

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser

from tests.api import fake_controller, serving
from tests.api.fake_controller import FakeController
from tests.console.console_page import open_console


@pytest.fixture
def controller() -> FakeController:
    controller = FakeController()
    controller.ticking = True
    return controller


@pytest.fixture
async def url(controller: FakeController) -> AsyncIterator[str]:
    async with serving.serve(controller, snapshot_interval=0.5) as (base, _):
        yield base + "/"


async def test_ten_backends_overview_services_and_an_admin_call(
    browser: Browser, url: str, controller: FakeController
) -> None:
    async with open_console(browser, url) as console:
        cards = await console.texts("#overview .card")
        assert any(card.startswith("services up\n4 of 4") for card in cards), cards
        assert any("backends taking new flows\n4 of 8" in card for card in cards), cards
        assert await console.texts("#services tbody tr.service td.mono") == [
            "192.0.2.100:80/tcp",
            "[2001:db8::100]:80/tcp",
            "192.0.2.53:53/udp",
            "[2001:db8::53]:53/udp",
        ]

        await console.page.click("#services tbody tr.service >> nth=0")
        await console.until("document.querySelectorAll('tr.detail table.backends tbody tr').length === 3")
        assert await console.texts("tr.detail table.backends tbody tr td:first-child") == [
            "198.18.0.12",
            "198.18.0.13",
            "198.18.0.11",
        ], "not serving first"
        assert "open=192.0.2.100%3A80%2Ftcp" in console.page.url, "the view is in the link"

        await console.page.click("tr.detail button[data-action=drain][data-key='web/198.18.0.11']")
        await console.until("document.querySelectorAll('tr.detail .badge.drained').length === 2")
        assert controller.admin_calls == [("web/198.18.0.11", "drained")]
        assert console.dialogs == ["Drain web/198.18.0.11? It takes no new flows; its open connections stay."]

        await console.page.mouse.move(5, 5)  # away from the table: it is redrawn again at each poll
        controller.overrides.clear()  # as if someone else reset it meanwhile
        await console.until("document.querySelectorAll('tr.detail .badge.drained').length === 1")

        await console.page.fill("#search", "dns")
        await console.until("document.querySelectorAll('#services tbody tr.service:not(.pinned)').length === 1")
        assert await console.texts("#services tbody tr.service:not(.pinned) td.name") == ["dns"]
        assert await console.texts("#services tbody tr.pinned td.mono") == ["192.0.2.100:80/tcp"], (
            "the opened service stays in view though the search left it out"
        )
        await console.page.fill("#search", "")
        await console.page.check("#problems")
        await console.until("document.querySelectorAll('#services tbody tr.service').length === 2")
        assert set(await console.texts("#services tbody tr.service td.name")) == {"web"}, (
            "web's two VIPs, each with its down backend"
        )
        assert "problems=1" in console.page.url

        await console.polled(3)  # the counters grow each snapshot: the traffic chart has a line to draw
        assert await console.value("""(() => {
            const canvas = document.getElementById('traffic-chart');
            const pixels = canvas.getContext('2d').getImageData(0, 20, canvas.width, canvas.height - 20).data;
            for (let i = 3; i < pixels.length; i += 4) if (pixels[i]) return true;
            return false; })()""")
        assert "pkt/s" in (await console.texts("#traffic-now"))[0]
    assert console.errors == [], "no script error, no resource refused by the page's policy"


@pytest.fixture
async def scaled_url() -> AsyncIterator[str]:
    controller = fake_controller.ScaledController(1000, 10)
    controller.down_every, controller.ticking = 37, True
    async with serving.serve(controller) as (base, _):
        yield base + "/"


async def test_ten_thousand_backends_draw_one_page(browser: Browser, scaled_url: str) -> None:
    async with open_console(browser, scaled_url) as console:
        assert (await console.texts("#range")) == ["1–50 of 1000"]
        assert len(await console.texts("#services tbody tr.service")) == 50
        assert await console.elements() < 1500, "a page of rows, not 10,000 backends"
        not_serving = [int(text) for text in await console.texts("#services tbody tr.service td:nth-child(6)")]
        assert not_serving[0] >= 1, "problems first"
        cards = await console.texts("#overview .card")
        assert any("of 10000" in card and "272 down" in card for card in cards), cards

        await console.page.click("#services tbody tr.service >> nth=0")
        await console.until("document.querySelectorAll('tr.detail table.backends tbody tr').length === 10")
        assert (await console.texts("tr.detail table.backends tbody tr td:nth-child(2)"))[0] == "down"
        assert await console.elements() < 2000

        await console.page.click("#next")
        await console.until("document.getElementById('range').textContent.startsWith('51–100')")

        await console.page.goto(scaled_url + "#q=s999")  # a link to one service
        await console.until("document.querySelectorAll('#services tbody tr.service').length === 1")
        assert await console.texts("#services tbody tr.service td.name") == ["s999"]
    assert console.errors == []
