"""Snapshots are built at most once per interval and rendered at most once each, off the loop, for every reader."""

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from balancer import api, metrics, snapshot_cache, status
from tests.api import serving
from tests.api.fake_controller import FakeController


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_one_build_per_interval_and_after_invalidate(controller: FakeController) -> None:
    clock = _Clock()
    cache = snapshot_cache.SnapshotCache(controller, interval=1.0, clock=clock, wall=lambda: 1.79e9)
    first = await cache.get()
    clock.now += 0.9
    assert await cache.get() is first and controller.snapshots == 1
    assert first.at == 1.79e9
    clock.now += 0.1
    second = await cache.get()
    assert second is not first and controller.snapshots == 2
    cache.invalidate()
    assert await cache.get() is not second and controller.snapshots == 3
    assert cache.builds == 3


async def test_interval_zero_builds_every_time(controller: FakeController) -> None:
    cache = snapshot_cache.SnapshotCache(controller, interval=0)
    await cache.get()
    await cache.get()
    assert controller.snapshots == 2


class _FailingOnce(FakeController):
    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    def snapshot(self) -> status.Snapshot:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("maps gone")
        return super().snapshot()


async def test_a_failed_build_is_not_cached() -> None:
    cache = snapshot_cache.SnapshotCache(_FailingOnce())
    with pytest.raises(RuntimeError, match="maps gone"):
        await cache.get()
    assert (await cache.get()).snapshot.ready


async def test_a_rendering_is_made_once_in_a_worker_thread_for_concurrent_callers(controller: FakeController) -> None:
    taken = await snapshot_cache.SnapshotCache(controller).get()
    prepared: list[int] = []
    rendered: list[int] = []

    def render() -> bytes:
        rendered.append(threading.get_ident())
        return b"body"

    def prepare() -> Callable[[], bytes]:
        prepared.append(threading.get_ident())
        return render

    bodies = await asyncio.gather(*(taken.rendered("x", prepare) for _ in range(5)))
    assert bodies == [b"body"] * 5 and await taken.rendered("x", prepare) == b"body"
    assert prepared == [threading.get_ident()]  # on the loop
    assert len(rendered) == 1 and rendered[0] != threading.get_ident()  # elsewhere, once


async def test_a_failed_rendering_is_tried_again(controller: FakeController) -> None:
    taken = await snapshot_cache.SnapshotCache(controller).get()
    calls: list[int] = []

    def render() -> bytes:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("encoder bug")
        return b"ok"

    with pytest.raises(ValueError):
        await taken.rendered("x", lambda: render)
    assert await taken.rendered("x", lambda: render) == b"ok"


async def test_concurrent_requests_share_one_snapshot_and_one_rendering_each(
    controller: FakeController, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    encodes: list[int] = []
    dumps: list[int] = []
    encode, dump = metrics.Metrics._encode, api._render_json

    def counting_encode(self: metrics.Metrics, *args: object) -> bytes:
        encodes.append(threading.get_ident())
        return encode(self, *args)  # type: ignore[arg-type]

    def counting_dump(taken: snapshot_cache.Taken, to_json: Any) -> bytes:
        dumps.append(threading.get_ident())
        return dump(taken, to_json)

    monkeypatch.setattr(metrics.Metrics, "_encode", counting_encode)
    monkeypatch.setattr(api, "_render_json", counting_dump)
    async with serving.serve(controller) as (base_url, _):

        async def get(path: str) -> bytes:
            async with http.get(f"{base_url}{path}") as response:
                assert response.status == 200
                return await response.read()

        bodies = await asyncio.gather(*(get(path) for path in ["/metrics", "/api/v1/status"] * 4))
    assert controller.snapshots == 1
    assert len(set(bodies[0::2])) == 1 and len(set(bodies[1::2])) == 1
    assert len(encodes) == 1 and len(dumps) == 1
    assert threading.get_ident() not in encodes + dumps  # rendered off the loop


async def test_scrapes_within_the_interval_get_the_same_body(
    controller: FakeController, http: aiohttp.ClientSession
) -> None:
    async with serving.serve(controller) as (base_url, collected):
        async with http.get(f"{base_url}/metrics") as response:
            first = await response.read()
        collected.observe_check("web/198.18.0.11", "web", "198.18.0.11", "http", 0.001, ok=False)
        controller.tick += 1
        async with http.get(f"{base_url}/metrics") as response:
            assert await response.read() == first
        collected.snapshots.invalidate()
        async with http.get(f"{base_url}/metrics") as response:
            assert await response.read() != first


async def test_status_time_is_when_the_snapshot_was_taken(
    controller: FakeController, base_url: str, http: aiohttp.ClientSession
) -> None:
    times = []
    for _ in range(2):
        async with http.get(f"{base_url}/api/v1/status") as response:
            times.append((await response.json())["time"])
    assert times[0] == times[1] and controller.snapshots == 1  # the same snapshot: a rate over it is "-", not 0


async def test_admin_calls_and_reloads_show_at_once(
    controller: FakeController, base_url: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{base_url}/api/v1/status") as response:
        assert (await response.json())["reloads"]["success"] == 1
    async with http.post(f"{base_url}/api/v1/backends/web/198.18.0.11/drain") as response:
        assert (await response.json())["admin"] == "drained"
    async with http.get(f"{base_url}/api/v1/status") as response:
        backends = (await response.json())["services"][0]["backends"]
    assert backends[0]["admin_override"] == "drained"
    async with http.post(f"{base_url}/api/v1/reload") as response:
        assert response.status == 200
    async with http.get(f"{base_url}/api/v1/status") as response:
        assert (await response.json())["reloads"]["success"] == 2


class _Gated(FakeController):
    """The first assembly waits for ``gate``: a build that is in flight while the state changes."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def snapshot(self) -> status.Snapshot:
        if self.snapshots == 0:
            self.gate.wait(5)
        return super().snapshot()


async def test_a_build_in_flight_when_the_state_changes_is_not_handed_out_after_it() -> None:
    controller = _Gated()
    cache = snapshot_cache.SnapshotCache(controller, interval=10.0)
    before = asyncio.ensure_future(cache.get())
    await asyncio.sleep(0.05)
    sharing = asyncio.ensure_future(cache.get())  # shares the build in flight
    await asyncio.sleep(0.01)
    cache.invalidate()  # an admin call changed the state meanwhile
    after = asyncio.ensure_future(cache.get())
    await asyncio.sleep(0.05)
    controller.gate.set()
    first, shared, fresh = await asyncio.gather(before, sharing, after)
    assert shared is first, "callers from before the change share the build"
    assert fresh is not first and controller.snapshots == 2, "a caller after the change gets a new build"
    assert await cache.get() is fresh
