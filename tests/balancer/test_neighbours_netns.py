"""The neighbour watcher against a real kernel neighbour table, in a lab namespace: MACs come from events."""

import asyncio
from collections.abc import Iterator
from ipaddress import ip_address

import pytest

from balancer import neighbours
from balancer.lab_netns import Host, Lab
from tests.bpf.conftest import require_bpf

pytestmark = pytest.mark.privileged

NUD_PERMANENT, NUD_FAILED = 0x80, 0x20
MOVED = "02:00:5e:00:53:99"


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_bpf()
    with Lab() as lab:
        yield lab


async def _next(reports: "asyncio.Queue[dict[neighbours.IPAddress, str | None]]") -> dict[neighbours.IPAddress, str | None]:
    async with asyncio.timeout(10):
        return await reports.get()


async def _neigh(host: Host, command: str, **spec: object) -> None:
    """Change the host's neighbour table (pyroute2's sync API runs outside the event loop's thread)."""

    def change() -> None:
        with host.ipr() as ipr:
            ipr.neigh(command, ifindex=host.ifindex, **spec)

    await asyncio.to_thread(change)


async def _follow(lb: Host, backend: Host, other: Host) -> None:
    reports: asyncio.Queue[dict[neighbours.IPAddress, str | None]] = asyncio.Queue()
    watcher = neighbours.NeighbourWatcher(reports.put_nowait, interfaces=[lb.ifindex])
    await watcher.start()
    address = ip_address(backend.ipv4)
    try:
        assert watcher.watch([address, ip_address(other.ipv4)]) == {address: None, ip_address(other.ipv4): None}
        assert sorted(map(str, watcher.unresolved())) == sorted([backend.ipv4, other.ipv4])

        await asyncio.to_thread(watcher.probe, [address])
        assert await _next(reports) == {address: backend.mac}, "a MAC appears: one event, for that address only"
        assert watcher.unresolved() == [ip_address(other.ipv4)]

        await _neigh(lb, "replace", dst=backend.ipv4, lladdr=MOVED, state=NUD_PERMANENT)
        assert await _next(reports) == {address: MOVED}, "a MAC changes"

        await _neigh(lb, "replace", dst=backend.ipv4, lladdr=MOVED, state=NUD_FAILED)
        assert await _next(reports) == {address: None}, "a FAILED neighbour is unresolved"

        await _neigh(lb, "del", dst=backend.ipv4)
        await asyncio.to_thread(watcher.probe, watcher.unresolved())
        report = await _next(reports)
        while address not in report:  # the other backend may resolve first
            report = await _next(reports)
        assert report[address] == backend.mac, "it resolves again"
    finally:
        watcher.close()


def test_macs_follow_the_kernels_neighbour_events(lab: Lab) -> None:
    lb = lab.add_host("lb", ipv4="198.18.0.5")
    backend = lab.add_host("b1", ipv4="198.18.0.11")
    other = lab.add_host("b2", ipv4="198.18.0.12")
    with lb.entered():
        asyncio.run(_follow(lb, backend, other))


def test_neighbour_table_limits_are_read() -> None:
    limits = neighbours.neighbour_table_limits(4)
    assert set(limits) == {"gc_thresh1", "gc_thresh2", "gc_thresh3"}
    assert limits["gc_thresh1"] <= limits["gc_thresh2"] <= limits["gc_thresh3"]
