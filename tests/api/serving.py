"""Run the real API on loopback around a fake controller, for tests and for looking at the console by hand.

``python -m tests.api.serving [PORT] [per-snapshot]`` serves the fake on 127.0.0.1 with counters that grow every
second (the console then shows rates), or on every snapshot with ``per-snapshot`` (for a headless browser's
virtual time); stop it with Ctrl-C.
"""

import asyncio
import contextlib
import ipaddress
import sys
from collections.abc import AsyncIterator

from aiohttp import web

from balancer import api, metrics, snapshot_cache
from tests.api.fake_controller import FakeController


@contextlib.asynccontextmanager
async def serve(
    controller: FakeController,
    *,
    host: str = "127.0.0.1",
    version: str = "0.1.0",
    snapshot_interval: float = 1.0,
) -> AsyncIterator[tuple[str, metrics.Metrics]]:
    """Yield the base URL of an ``ApiServer`` on ``host`` (a free port) and its ``Metrics``, whose snapshots are
    cached for ``snapshot_interval`` seconds."""
    cache = snapshot_cache.SnapshotCache(controller, interval=snapshot_interval)
    collected = metrics.Metrics(controller, version=version, snapshots=cache)
    server = api.ApiServer(controller, metrics=collected, host=ipaddress.ip_address(host), port=0)
    try:
        await server.setup()
        await server.start()
        yield server.url, collected
    finally:
        await server.cleanup()


@contextlib.asynccontextmanager
async def serve_pretending(controller: FakeController, listen_host: str) -> AsyncIterator[str]:
    """Serve on 127.0.0.1 an app that applies the admin rules of a listener on ``listen_host``."""
    app = api.make_app(controller, metrics=metrics.Metrics(controller), listen_host=ipaddress.ip_address(listen_host))
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = next(address[1] for address in runner.addresses if isinstance(address, tuple))
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _main(port: int, per_snapshot: bool) -> None:
    controller = FakeController()
    controller.ticking = per_snapshot
    collected = metrics.Metrics(controller)
    server = api.ApiServer(controller, metrics=collected, host=ipaddress.ip_address("127.0.0.1"), port=port)
    await server.setup()
    await server.start()
    print(f"serving the fake controller on {server.url}/", flush=True)
    try:
        while True:
            await asyncio.sleep(1)
            if not per_snapshot:
                controller.tick += 1
    finally:
        await server.cleanup()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(int(sys.argv[1]) if len(sys.argv) > 1 else 9180, sys.argv[2:3] == ["per-snapshot"]))
