"""How long a big ``/metrics`` scrape takes and how long it stalls the event loop (not a test; move to benchmarks/).

``.venv/bin/python -m tests.api.bench_scrape [SERVICES] [BACKENDS]``: SERVICES services x 2 VIPs x BACKENDS
backends (default 50 x 2 x 100 = 10,000 backend rows), rendered through ``Metrics.exposition`` (encoding in a
worker thread) and ``Metrics.render`` (on the loop), with a 10 ms ticker measuring the loop's longest gap.
"""

import asyncio
import dataclasses
import sys
import time

from balancer import metrics, status
from tests.api.fake_controller import FakeController


class _Big(FakeController):
    def __init__(self, services: int, backends: int) -> None:
        super().__init__()
        snapshot = super().snapshot()
        web = snapshot.services[0]
        rows = []
        for s in range(services):
            for v in range(2):
                members = tuple(
                    dataclasses.replace(web.backends[0], key=f"s{s}/198.18.{s}.{i}", address=f"198.18.{s}.{i}")
                    for i in range(backends)
                )
                rows.append(dataclasses.replace(web, name=f"s{s}", vip=f"192.0.2.{v}", backends=members))
        self.big = dataclasses.replace(snapshot, services=tuple(rows))

    def snapshot(self) -> status.Snapshot:
        return self.big


async def _worst_gap(blocking: bool, collected: metrics.Metrics) -> float:
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    if blocking:
        collected.render()
    else:
        await collected.exposition("")
    await asyncio.sleep(0.05)
    task.cancel()
    return max(gaps)


async def _main(services: int, backends: int) -> None:
    collected = metrics.Metrics(_Big(services, backends), version="bench")
    body = collected.render()
    lines = body.count(b"\n")
    print(f"{services * 2 * backends} backend rows, {lines} lines, {len(body) / 1e6:.1f} MB")
    for label, blocking in (("exposition (worker thread)", False), ("render (on the loop)", True)):
        start = time.perf_counter()
        gap = await _worst_gap(blocking, collected)
        print(f"{label}: {time.perf_counter() - start - 0.1:.2f} s, loop's longest gap {gap * 1000:.0f} ms")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    asyncio.run(_main(*(args + [50, 100][len(args):])))
