"""The console in a real headless Chromium at 10 and at 10,000 backends: ``make bench-console``.

The real API serves the fake controller (``tests.api.fake_controller``: its 5 services of the unit tests, and
``ScaledController`` with 1,000 services x 10 backends, one backend in 37 down), its counters growing with every
snapshot. For each size: seconds from opening the page to the first drawing, the elements in the page, the
milliseconds each poll spent fetching and drawing (median and worst of ``--polls`` polls), the share of the time
the page's thread was busy drawing, and the same with the first service opened (its backends shown). Screenshots
go to ``--shots`` (default ``console-shots/``). The last line is one JSON object, keys ``<size>_<figure>``.

Before this console (main at 0822e2a), the page drew every backend from the 4 MB status: at 10,000 backends the
first drawing took 10 s and built 224,620 elements, and each 2 s poll kept the page busy 70% of the time.
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from playwright.async_api import Browser, async_playwright  # noqa: E402

from tests.api import fake_controller, serving  # noqa: E402
from tests.console.conftest import CHROMIUM, LAUNCH_ARGS  # noqa: E402
from tests.console.console_page import Console, open_console  # noqa: E402


async def _poll_figures(console: Console, polls: int) -> dict[str, Any]:
    fetch: list[int] = []
    draw: list[int] = []
    started, first = time.monotonic(), await console.polls()
    for _ in range(polls):
        await console.polled(1)
        fetch.append(int(await console.value("Number(document.body.dataset.fetchMs)")))
        draw.append(int(await console.value("Number(document.body.dataset.renderMs)")))
    elapsed = time.monotonic() - started
    done = await console.polls() - first
    return {
        "elements": await console.elements(),
        "fetch_ms_median": statistics.median(fetch),
        "fetch_ms_max": max(fetch),
        "draw_ms_median": statistics.median(draw),
        "draw_ms_max": max(draw),
        "busy_percent": round(100 * statistics.mean(draw) * done / 1000 / elapsed, 1),
    }


async def _measure(
    browser: Browser, name: str, controller: fake_controller.FakeController, polls: int, shots: Path
) -> dict[str, Any]:
    controller.ticking = True
    async with serving.serve(controller) as (url, _):
        started = time.monotonic()
        async with open_console(browser, url + "/") as console:
            figures: dict[str, Any] = {"first_draw_s": round(time.monotonic() - started, 2)}
            figures.update(await _poll_figures(console, polls))
            await console.page.screenshot(path=str(shots / f"{name}-overview.png"))
            await console.page.click("#services tbody tr.service >> nth=0")
            await console.until("document.querySelector('tr.detail table.backends tbody tr') !== null")
            opened = await _poll_figures(console, polls)
            figures.update({f"opened_{key}": value for key, value in opened.items()})
            await console.page.screenshot(path=str(shots / f"{name}-opened.png"), full_page=True)
    return figures


async def _main(polls: int, shots: Path) -> dict[str, dict[str, Any]]:
    shots.mkdir(parents=True, exist_ok=True)
    large = fake_controller.ScaledController(1000, 10)
    large.down_every = 37
    results = {}
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            for name, controller in (("small", fake_controller.FakeController()), ("large", large)):
                print(f"measuring {name} ...", file=sys.stderr, flush=True)
                results[name] = await _measure(browser, name, controller, polls, shots)
        finally:
            await browser.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--polls", type=int, default=10, help="polls measured per view")
    parser.add_argument("--shots", type=Path, default=Path("console-shots"), help="where the screenshots go")
    args = parser.parse_args()
    results = asyncio.run(_main(args.polls, args.shots))
    names = list(results["small"])
    print(f"{'':28}{'10 backends':>14}{'10,000':>14}")
    for name in names:
        print(f"{name:28}" + "".join(f"{results[size][name]:>14}" for size in ("small", "large")))
    print(f"screenshots in {args.shots}/", file=sys.stderr)
    print(json.dumps({f"{size}_{name}": value for size, figures in results.items() for name, value in figures.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
