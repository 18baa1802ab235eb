"""The start: health checks run while the data plane loads (clang takes seconds), and a load that fails leaves no
checker behind.

The real daemon and checker processes, the fake data plane (whose ``setup`` stands for the compile) and a real
TCP backend on loopback.
"""

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import bpf
import config
from balancer import daemon
from tests.balancer.fake_plane import FakeDataPlane
from tests.balancer.test_daemon_reload import ResolvedNeighbours, document, fake_daemon


class _Neighbours(ResolvedNeighbours):
    """The faked neighbour table, recording when it was read and closed."""

    read = threading.Event()
    closed = threading.Event()

    async def start(self) -> None:
        _Neighbours.read.set()

    def close(self) -> None:
        _Neighbours.closed.set()


class _Backend:
    """A TCP server on loopback that counts the connections (the checks) it accepted."""

    def __init__(self) -> None:
        self.accepted = threading.Event()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> "_Backend":
        def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted.set()
            writer.close()

        self._server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


@pytest.fixture
async def backend() -> AsyncIterator[_Backend]:
    server = await _Backend().start()
    yield server
    server.close()


class _SlowPlane(FakeDataPlane):
    """A data plane whose load takes until a check has reached the backend (at most ``wait`` s), or fails."""

    def __init__(self, settings: Any, backend: _Backend, *, wait: float, fail: bool = False) -> None:
        super().__init__(settings=settings)
        self._backend, self._wait, self._fail = backend, wait, fail
        self.checked_while_loading = False
        self.neighbours_read_while_loading = False

    def setup(self) -> None:  # runs in a thread, as the real one does
        self.checked_while_loading = self._backend.accepted.wait(self._wait)
        self.neighbours_read_while_loading = _Neighbours.read.wait(self._wait)
        if self._fail:
            raise bpf.DataPlaneError("compiling the XDP program failed (as clang can)")


@pytest.fixture(autouse=True)
def neighbour_events() -> None:
    _Neighbours.read.clear()
    _Neighbours.closed.clear()


async def test_checks_run_and_the_neighbour_table_is_read_while_the_data_plane_loads(
    tmp_path: Path, backend: _Backend
) -> None:
    path = tmp_path / "lb.yaml"
    path.write_text(document(port=backend.port))
    planes: list[_SlowPlane] = []

    def plane_factory(settings: Any) -> Any:
        planes.append(_SlowPlane(settings, backend, wait=10.0))
        return planes[-1]

    d = fake_daemon(path, plane_factory, neighbours=_Neighbours)
    task = asyncio.create_task(d.run(handle_signals=False))
    try:
        async with asyncio.timeout(20):
            await d.ready_event.wait()
    finally:
        d.stop_trigger.set()
        await task
    assert planes[0].checked_while_loading, "a check reached the backend before the data plane had loaded"
    assert planes[0].neighbours_read_while_loading, "the neighbour table was read before the data plane had loaded"


async def test_a_data_plane_that_fails_to_load_leaves_no_checker_or_watcher_running(
    tmp_path: Path, backend: _Backend
) -> None:
    path = tmp_path / "lb.yaml"
    path.write_text(document(port=backend.port))

    def plane_factory(settings: Any) -> Any:
        return _SlowPlane(settings, backend, wait=10.0, fail=True)

    d = fake_daemon(path, plane_factory, neighbours=_Neighbours)
    task = asyncio.create_task(d.run(handle_signals=False))
    async with asyncio.timeout(20):
        while not backend.accepted.is_set():
            await asyncio.sleep(0.01)
        scheduler = d._scheduler
        assert scheduler is not None
        seen = scheduler.worker_pids()
        with pytest.raises(bpf.DataPlaneError, match="compiling"):
            await task
    assert seen, "checker processes ran while the data plane loaded"
    assert _Neighbours.read.is_set() and _Neighbours.closed.is_set(), "the watcher started early was closed"
    for pid in seen:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.parametrize(("check", "workers"), [("{type: http}", 2), ("{type: http, keepalive: true}", 1)])
def test_checker_processes_are_sized_by_what_the_checks_cost(check: str, workers: int) -> None:
    """4,000 checks a second: two processes with a new connection each, one when the connections are kept (a
    kept-alive check costs 0.4 of one: ``make bench-healthchecks``)."""
    services = "".join(
        f"  - {{name: s{i}, vip: 192.0.2.{i + 1}, port: 80, protocol: tcp,"
        f" checks: [{check[:-1]}, timing: {{interval: 0.25, timeout: 0.2}}}}],"
        f" backends: [{', '.join(f'{{address: 198.18.{i}.{j + 1}}}' for j in range(10))}]}}\n"
        for i in range(100)
    )
    cfg = config.parse_config(f"interfaces: [lo]\nservices:\n{services}", source="sized.yaml")
    assert daemon.check_workers(cfg, cpus=8) == workers
