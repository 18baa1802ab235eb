"""The HTTP API at scale: ``/metrics``, ``/api/v1/status`` and ``/healthz`` over a fake controller of 10,000 backends.

The real ``ApiServer`` and ``Metrics`` serve ``tests.api.fake_controller.ScaledController`` (1,000 services x 10
backends, one HTTP check each; its snapshot is built from scratch on every call, about as costly as the core's),
after one check run of each result has been recorded for every backend. A client in another thread times each
request; a 10 ms ticker on the server's loop measures the loop's longest stall meanwhile. Not a test: figures.

    .venv/bin/python benchmarks/bench_api.py [--services 1000] [--backends 10]

The last line is one JSON object: ``snapshot_build_s``, what one snapshot of the fake costs (on the loop, the
floor of the loop stalls below); per request, ``seconds``, ``loop_stall_ms``, ``bytes``, and for ``/metrics`` the
number of ``series`` (``metrics_as_prometheus`` asks as Prometheus does: OpenMetrics, gzip); ``snapshots`` counts the snapshots the controller built for all requests together.
"""

import argparse
import asyncio
import concurrent.futures
import json
import os
import sys
import time
import urllib.request
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tests.api import fake_controller, serving  # noqa: E402


PROMETHEUS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}
"""What Prometheus sends when it scrapes."""


def _get(url: str, headers: dict[str, str] | None = None) -> bytes:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=120) as response:
        body: bytes = response.read()
    return body


class _Ticker:
    """The longest gap between 10 ms sleeps on the loop, since the last ``reset()``."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            self.worst = max(self.worst, now - last - 0.01)
            last = now

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def reset(self) -> None:
        self.worst = 0.0


_CLIENTS = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="client")
"""The client's own threads: in the default executor they would take the places the server renders in."""


async def _timed(ticker: _Ticker, *urls: str, headers: dict[str, str] | None = None) -> tuple[float, list[bytes]]:
    ticker.reset()
    start = time.perf_counter()
    loop = asyncio.get_running_loop()
    bodies = await asyncio.gather(*(loop.run_in_executor(_CLIENTS, _get, url, headers) for url in urls))
    return time.perf_counter() - start, list(bodies)


async def _main(services: int, backends: int) -> dict[str, Any]:
    start = time.perf_counter()
    controller = fake_controller.ScaledController(services, backends)
    print(f"config of {services} x {backends} backends parsed in {time.perf_counter() - start:.1f} s", flush=True)
    results: dict[str, Any] = {"services": services, "backends": services * backends}
    start = time.perf_counter()
    controller.snapshot()
    results["snapshot_build_s"] = round(time.perf_counter() - start, 3)
    print(f"the fake's snapshot: {results['snapshot_build_s']} s to build (the controller's cost, on the loop)")
    async with serving.serve(controller) as (url, collected):
        for service, backend in controller.running_config.backends():
            key = service.backend_key(backend)
            collected.observe_check(key, service.name, backend.address_text, "http", 0.002, ok=True)
            collected.observe_check(key, service.name, backend.address_text, "http", 1.0, ok=False)
        ticker = _Ticker()
        ticker.start()
        await asyncio.sleep(0.1)
        for name, path in (
            ("metrics", "/metrics"),
            ("metrics_again", "/metrics"),
            ("metrics_as_prometheus", "/metrics"),
            ("status", "/api/v1/status"),
            ("status_again", "/api/v1/status"),
            ("healthz", "/healthz"),
        ):
            await asyncio.sleep(0.0 if name.endswith("_again") else 1.5)  # "again": within the second
            headers = PROMETHEUS if name == "metrics_as_prometheus" else None  # OpenMetrics, gzip
            seconds, (body,) = await _timed(ticker, url + path, headers=headers)
            figures: dict[str, Any] = {
                "seconds": round(seconds, 3),
                "loop_stall_ms": round(ticker.worst * 1000),
                "bytes": len(body),
            }
            if path == "/metrics" and headers is None:
                figures["series"] = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
            results[name] = figures
            print(
                f"{name:14} {seconds:6.2f} s  loop stall {ticker.worst * 1000:5.0f} ms  "
                f"{len(body) / 1e6:6.1f} MB  {figures.get('series', '')}",
                flush=True,
            )
        await asyncio.sleep(1.5)
        before = controller.snapshots
        seconds, _ = await _timed(ticker, *[url + "/metrics"] * 3, *[url + "/api/v1/status"] * 3)
        results["concurrent_3_metrics_3_status"] = {
            "seconds": round(seconds, 3),
            "loop_stall_ms": round(ticker.worst * 1000),
            "snapshots": controller.snapshots - before,
        }
        print(
            f"3 x /metrics and 3 x status at once: {seconds:.2f} s, loop stall {ticker.worst * 1000:.0f} ms, "
            f"{controller.snapshots - before} snapshots built",
            flush=True,
        )
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--backends", type=int, default=10, help="per service")
    options = parser.parse_args()
    print(json.dumps(asyncio.run(_main(options.services, options.backends))))
