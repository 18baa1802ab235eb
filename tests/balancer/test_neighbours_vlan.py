"""A backend on a VLAN of a trunk: its neighbour entry is on the VLAN device (``eth0.100``), which XDP does not
attach to; the watcher counts it as an entry on the attached trunk, VLAN 100. The kernel here has no 802.1Q
devices, so the link lookup is injected and the kernel's messages are fed in as they would arrive."""

import asyncio
from ipaddress import ip_address
from typing import Any

from pyroute2.netlink.rtnl import RTM_DELNEIGH, RTM_NEWNEIGH

import bpf
from balancer import neighbours

TRUNK, VLAN_DEVICE, OTHER = 4, 9, 12
NUD_REACHABLE = 0x02
B = ip_address("198.18.5.20")
MAC = "02:00:5e:00:53:20"


class Message(dict[str, Any]):
    """The parts of a pyroute2 ndmsg the watcher reads."""

    def __init__(self, kind: int, ifindex: int, state: int = NUD_REACHABLE) -> None:
        super().__init__(header={"type": kind}, ifindex=ifindex, state=state)

    def get_attr(self, name: str) -> str | None:
        return {"NDA_DST": str(B), "NDA_LLADDR": MAC}.get(name)


def test_an_entry_on_a_vlan_device_of_an_attached_trunk_is_that_trunk_and_vlan() -> None:
    asked: list[int] = []

    def link_info(ifindex: int) -> tuple[int, int]:
        asked.append(ifindex)
        return {VLAN_DEVICE: (TRUNK, 100)}.get(ifindex, (ifindex, 0))

    async def run() -> None:
        reports: list[dict[Any, Any]] = []
        watcher = neighbours.NeighbourWatcher(reports.append, interfaces={"eth0": TRUNK}, link_info=link_info)
        watcher._loop = asyncio.get_running_loop()  # noqa: SLF001 - fed by hand, no netlink socket
        assert watcher.watch([B]) == {B: None}
        watcher._apply([Message(RTM_NEWNEIGH, VLAN_DEVICE)])  # noqa: SLF001
        await asyncio.sleep(0)
        assert reports == [{B: bpf.NextHop(MAC, TRUNK, 100)}]
        assert watcher.watch([B], pinned={B: "eth0"}) == {B: bpf.NextHop(MAC, TRUNK, 100)}, "pinned to the trunk"
        watcher._apply([Message(RTM_NEWNEIGH, OTHER)])  # noqa: SLF001 - not attached, not a VLAN of it
        watcher._apply([Message(RTM_DELNEIGH, VLAN_DEVICE)])  # noqa: SLF001
        await asyncio.sleep(0)
        assert reports[-1] == {B: None}
        assert asked == [VLAN_DEVICE, OTHER], "each ifindex asked once, attached ones never"

    asyncio.run(run())


def test_the_vlan_given_in_the_config_wins_over_the_learnt_one() -> None:
    from balancer import desired
    from tests.balancer.test_desired import cfg, up

    config_ = cfg()
    hops = {backend.address: bpf.NextHop(MAC, TRUNK, 100) for _, backend in config_.backends()}
    health = up(*(service.backend_key(backend) for service, backend in config_.backends()))
    configured = {backend.address: backend.vlan for _, backend in config_.backends()}
    for _, service in desired.dataplane_services(config_, health, {}, hops):
        for backend in service.backends:
            assert backend.vlan == (configured[backend.address] or 100)
            assert backend.ifindex == TRUNK
