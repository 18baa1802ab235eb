"""The neighbour watcher against a real kernel neighbour table, in a lab namespace: next hops (MAC and the
interface it was learnt on) come from events."""

import asyncio
from ipaddress import ip_address

import pytest

import bpf
import config
from balancer import neighbours
from balancer.lab.netns import Host, Lab

pytestmark = pytest.mark.privileged

NUD_PERMANENT, NUD_FAILED = 0x80, 0x20
MOVED = "02:00:5e:00:53:99"


Reports = dict[config.IpAddress, bpf.NextHop | None]


async def _next(reports: "asyncio.Queue[Reports]") -> Reports:
    async with asyncio.timeout(10):
        return await reports.get()


async def _neigh(host: Host, command: str, **spec: object) -> None:
    """Change the host's neighbour table (pyroute2's sync API runs outside the event loop's thread)."""

    def change() -> None:
        with host.ipr() as ipr:
            ipr.neigh(command, ifindex=host.ifindex, **spec)

    await asyncio.to_thread(change)


async def _follow(lb: Host, backend: Host, other: Host) -> None:
    reports: asyncio.Queue[Reports] = asyncio.Queue()
    watcher = neighbours.NeighbourWatcher(reports.put_nowait, interfaces=[lb.ifindex])
    await watcher.start()
    address = ip_address(backend.ipv4)
    try:
        assert watcher.watch([address, ip_address(other.ipv4)]) == {address: None, ip_address(other.ipv4): None}
        assert sorted(map(str, watcher.unresolved())) == sorted([backend.ipv4, other.ipv4])

        await asyncio.to_thread(watcher.probe, [address])
        here = lb.ifindex
        assert await _next(reports) == {address: bpf.NextHop(backend.mac, here)}, "one event, for that address only"
        assert watcher.unresolved() == [ip_address(other.ipv4)]

        await _neigh(lb, "replace", dst=backend.ipv4, lladdr=MOVED, state=NUD_PERMANENT)
        assert await _next(reports) == {address: bpf.NextHop(MOVED, here)}, "a MAC changes"

        await _neigh(lb, "replace", dst=backend.ipv4, lladdr=MOVED, state=NUD_FAILED)
        assert await _next(reports) == {address: None}, "a FAILED neighbour is unresolved"

        await _neigh(lb, "del", dst=backend.ipv4)
        await asyncio.to_thread(watcher.probe, watcher.unresolved())
        report = await _next(reports)
        while address not in report:  # the other backend may resolve first
            report = await _next(reports)
        assert report[address] == bpf.NextHop(backend.mac, here), "it resolves again"
    finally:
        watcher.close()


def test_macs_follow_the_kernels_neighbour_events(lab: Lab) -> None:
    lb = lab.add_host("lb", ipv4="198.18.0.5")
    backend = lab.add_host("b1", ipv4="198.18.0.11")
    other = lab.add_host("b2", ipv4="198.18.0.12")
    with lb.entered():
        asyncio.run(_follow(lb, backend, other))


async def _two_interfaces(lb: Host, address: config.IpAddress, macs: dict[int, str]) -> None:
    reports: asyncio.Queue[Reports] = asyncio.Queue()
    attached = {i.ifname: i.ifindex for i in lb.interfaces}
    first, second = (i.ifname for i in lb.interfaces)
    watcher = neighbours.NeighbourWatcher(reports.put_nowait, interfaces=attached)
    await watcher.start()
    try:
        low = min(macs)
        assert watcher.watch([address]) == {address: bpf.NextHop(macs[low], low)}, "unpinned: the lowest ifindex"
        assert watcher.watch([address], pinned={address: second}) == {
            address: bpf.NextHop(macs[attached[second]], attached[second])
        }, "pinned: that interface's entry"
        assert watcher.watch([address], pinned={address: first}) == {
            address: bpf.NextHop(macs[attached[first]], attached[first])
        }
        assert watcher.watch([address], pinned={address: "gone0"}) == {address: None}, "pinned elsewhere: none"

        del attached[second]  # the second interface detached: its entries no longer count
        watcher.watch([address])
        watcher.set_interfaces(attached)
        assert watcher.next_hop(address) == bpf.NextHop(macs[attached[first]], attached[first])
    finally:
        watcher.close()


def test_an_address_on_two_interfaces_is_learnt_on_the_lowest_or_on_its_pinned_one(lab: Lab) -> None:
    segment = lab.add_segment()
    lb = lab.add_host("lb", ipv4="198.18.0.5")
    lb.add_interface(segment, ipv4="198.18.1.5")
    address = ip_address("198.18.0.77")
    macs = {lb.interfaces[0].ifindex: "02:00:5e:00:53:01", lb.interfaces[1].ifindex: "02:00:5e:00:53:02"}
    with lb.ipr() as ipr:
        for ifindex, mac in macs.items():
            ipr.neigh("add", ifindex=ifindex, dst=str(address), lladdr=mac, state=NUD_PERMANENT)
    with lb.entered():
        asyncio.run(_two_interfaces(lb, address, macs))
        assert neighbours.vlan_of(lb.ifindex) == (lb.ifindex, 0), "a veth is no VLAN device"


def test_neighbour_table_limits_are_read() -> None:
    limits = neighbours.neighbour_table_limits(4)
    assert set(limits) == {"gc_thresh1", "gc_thresh2", "gc_thresh3"}
    assert limits["gc_thresh1"] <= limits["gc_thresh2"] <= limits["gc_thresh3"]
