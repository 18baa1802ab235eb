"""When XDP is attached again: the link watcher's facts from synthetic netlink link messages, ``plan()`` on them,
and ``Reattacher`` against a fake data plane. No root needed; ``test_link_reattach_netns.py`` does it for real."""

import asyncio
import dataclasses
import logging
import socket
from collections.abc import Mapping

import pytest
from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_NEWLINK
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

import bpf
from balancer import link_reattach, link_watcher
from balancer.link_reattach import Action, Attachment

OURS, THEIRS = 17, 99
_ATTACHED = {"native": ("xdp", "IFLA_XDP_DRV_PROG_ID"), "generic": ("xdpgeneric", "IFLA_XDP_SKB_PROG_ID")}


def message(
    index: int,
    name: str,
    xdp: Mapping[str, int] | None = None,
    *,
    kind: int = RTM_NEWLINK,
    family: int = socket.AF_UNSPEC,
) -> bytes:
    """An ``RTM_NEWLINK``/``RTM_DELLINK`` as the kernel sends it, with the XDP programs of ``xdp`` (mode -> id)."""
    msg = ifinfmsg()
    msg["header"]["type"] = kind
    msg["family"] = family
    msg["index"] = index
    attrs: list[tuple[str, object]] = [("IFLA_XDP_ATTACHED", 0)]
    for mode, prog_id in (xdp or {}).items():
        attached, attr = _ATTACHED[mode]
        attrs = [("IFLA_XDP_ATTACHED", attached), (attr, prog_id)]
    msg["attrs"] = [("IFLA_IFNAME", name), ("IFLA_XDP", {"attrs": attrs})]
    msg.encode()
    return bytes(msg.data)


def test_a_link_message_says_which_program_is_attached_in_which_mode() -> None:
    [generic] = MarshalRtnl().parse(message(4, "eth0", {"generic": OURS}))
    assert link_watcher.link_from_message(generic) == link_watcher.Link(4, "eth0", {"generic": OURS})
    [native] = MarshalRtnl().parse(message(5, "eth1", {"native": THEIRS}))
    assert link_watcher.link_from_message(native) == link_watcher.Link(5, "eth1", {"native": THEIRS})
    [none] = MarshalRtnl().parse(message(6, "eth2"))
    assert link_watcher.link_from_message(none).xdp == {}


@dataclasses.dataclass(frozen=True)
class Case:
    """Starting from eth0 (ifindex 4) running our program in generic mode, these messages arrive; then ``plan()``
    says ``actions``."""

    description: str
    messages: tuple[bytes, ...]
    actions: tuple[Action, ...]


ETH0 = message(4, "eth0", {"generic": OURS})
CASES = [
    Case("nothing happened", (), ()),
    Case("an unrelated interface comes and goes", (message(7, "veth9"), message(7, "veth9", kind=RTM_DELLINK)), ()),
    Case("link down and up, program kept", (ETH0, ETH0), ()),
    Case("NIC reset: the program is gone", (message(4, "eth0"),), (Action("eth0", "xdp_missing"),)),
    Case(
        "`ip link set dev eth0 xdp off`, then another program in our mode",
        (message(4, "eth0"), message(4, "eth0", {"generic": THEIRS})),
        (Action("eth0", "xdp_replaced"),),
    ),
    Case(
        "another program in the other mode",
        (message(4, "eth0", {"native": THEIRS}),),
        (Action("eth0", "xdp_replaced"),),
    ),
    Case("deleted: wait for it", (message(4, "eth0", kind=RTM_DELLINK),), ()),
    Case(
        "deleted and re-created: a new ifindex, no program",
        (message(4, "eth0", kind=RTM_DELLINK), message(8, "eth0")),
        (Action("eth0", "recreated"),),
    ),
    Case(
        "renamed away, program still on it: detach it there; nothing has the name yet",
        (message(4, "wan0", {"generic": OURS}),),
        (Action("eth0", "renamed", release="wan0"),),
    ),
    Case(
        "renamed away and another interface took the name",
        (message(4, "wan0", {"generic": OURS}), message(9, "eth0")),
        (Action("eth0", "renamed", release="wan0"), Action("eth0", "renamed")),
    ),
    Case(
        "renamed away and released: only the new eth0 needs it",
        (message(4, "wan0"), message(9, "eth0")),
        (Action("eth0", "renamed"),),
    ),
    Case("renamed away and back: same interface, program still on", (message(4, "wan0", {"generic": OURS}), ETH0), ()),
    Case(
        "a bridge's message about its port (AF_BRIDGE) changes nothing",
        (message(4, "eth0", family=socket.AF_BRIDGE), message(4, "eth0", kind=RTM_DELLINK, family=socket.AF_BRIDGE)),
        (),
    ),
]


def watcher_after(messages: tuple[bytes, ...]) -> link_watcher.LinkWatcher:
    """A watcher (not started: no socket, no thread) that read a dump of lo and eth0, then ``messages``."""
    watcher = link_watcher.LinkWatcher(lambda: None)
    watcher._apply(MarshalRtnl().parse(message(1, "lo") + ETH0), replace=True)
    for data in messages:
        watcher._apply(MarshalRtnl().parse(data))
    return watcher


@pytest.mark.parametrize("case", CASES, ids=[case.description for case in CASES])
def test_plan(case: Case) -> None:
    links = watcher_after(case.messages).links()
    assert tuple(link_reattach.plan({"eth0": Attachment("eth0", "generic", 4)}, links, OURS)) == case.actions


def test_a_burst_of_messages_wakes_the_owner_once_per_change() -> None:
    async def run() -> int:
        wakes = 0

        def woken() -> None:
            nonlocal wakes
            wakes += 1

        watcher = link_watcher.LinkWatcher(woken)
        watcher._loop = asyncio.get_running_loop()
        watcher._apply(MarshalRtnl().parse(message(1, "lo") + ETH0), replace=True)
        watcher._apply(MarshalRtnl().parse(ETH0 + ETH0))  # no change: no wake
        watcher._apply(MarshalRtnl().parse(message(4, "eth0") + message(4, "eth0")))
        await asyncio.sleep(0)
        return wakes

    assert asyncio.run(run()) == 2


class FakePlane:
    """What ``Reattacher`` uses of ``bpf.DataPlane``, over a dict of links that attaching changes."""

    def __init__(self, links: dict[int, link_watcher.Link]) -> None:
        self.links = links
        self.prog_id = OURS
        self.attached = {"eth0": "generic"}
        self.attached_ifindexes = {"eth0": 4}
        self.fail: str | None = None
        self.calls: list[tuple[str, str]] = []

    def attach(self, ifname: str, mode: str = "auto") -> str:
        self.calls.append(("attach", ifname))
        if self.fail:
            raise bpf.DataPlaneError(self.fail)
        link = next(link for link in self.links.values() if link.name == ifname)
        used = "generic" if mode == "auto" else mode
        self.links[link.ifindex] = dataclasses.replace(link, xdp={used: OURS})
        self.attached[ifname], self.attached_ifindexes[ifname] = used, link.ifindex
        return used

    def release(self, device: str, mode: str) -> None:
        self.calls.append(("release", device))
        link = next(link for link in self.links.values() if link.name == device)
        self.links[link.ifindex] = dataclasses.replace(link, xdp={})


class FakeWatcher:
    def __init__(self, links: dict[int, link_watcher.Link]) -> None:
        self._links = links
        self.changed_at = 0.0

    def links(self) -> dict[int, link_watcher.Link]:
        return dict(self._links)

    def resync(self) -> dict[int, link_watcher.Link]:
        return dict(self._links)


def reattacher(links: dict[int, link_watcher.Link]) -> tuple[link_reattach.Reattacher, FakePlane]:
    plane = FakePlane(links)
    return link_reattach.Reattacher(plane, FakeWatcher(links)), plane  # type: ignore[arg-type]


def test_reattacher_attaches_counts_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    links = {4: link_watcher.Link(4, "eth0", {})}
    r, plane = reattacher(links)
    assert r.pending()
    assert asyncio.run(r.ensure({"eth0": "generic"})) == (True, False)
    assert not r.pending() and r.counts == {"eth0": {"xdp_missing": 1}}
    assert "event=xdp_reattached interface=eth0 reason=xdp_missing mode=generic ifindex=4" in caplog.text
    # Re-created: attached at the new ifindex, counted under its own reason.
    del links[4]
    links[8] = link_watcher.Link(8, "eth0", {})
    assert asyncio.run(r.ensure({"eth0": "generic"})) == (True, False)
    assert plane.attached_ifindexes == {"eth0": 8} and r.counts == {"eth0": {"xdp_missing": 1, "recreated": 1}}


def test_a_renamed_interface_is_released_and_the_name_attached_when_it_comes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    links = {4: link_watcher.Link(4, "wan0", {"generic": OURS})}
    r, plane = reattacher(links)
    assert r.pending()
    assert asyncio.run(r.ensure({"eth0": "auto"})) == (False, False)
    assert plane.calls == [("release", "wan0")] and links[4].xdp == {} and not r.pending()
    assert "event=xdp_interface_gone interface=eth0" in caplog.text
    links[9] = link_watcher.Link(9, "eth0", {})
    assert r.pending()
    assert asyncio.run(r.ensure({"eth0": "auto"})) == (True, False)
    assert plane.calls[-1] == ("attach", "eth0") and r.counts == {"eth0": {"renamed": 1}}


def test_a_failed_attach_is_reported_for_a_retry_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    links = {4: link_watcher.Link(4, "eth0", {"native": THEIRS})}
    r, plane = reattacher(links)
    plane.fail = "attaching XDP to eth0 in generic mode failed: File exists"
    for _ in range(3):
        assert asyncio.run(r.ensure({"eth0": "generic"})) == (False, True)
    assert caplog.text.count("event=xdp_reattach_failed interface=eth0 reason=xdp_replaced") == 1
    assert r.counts == {}
    plane.fail = None
    assert asyncio.run(r.ensure({"eth0": "generic"})) == (True, False)
    assert r.counts == {"eth0": {"xdp_replaced": 1}}


def test_a_failed_read_of_the_links_is_retried_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    r, plane = reattacher({4: link_watcher.Link(4, "eth0", {})})

    def refuse() -> dict[int, link_watcher.Link]:
        raise OSError(105, "No buffer space available")

    r.watcher.resync = refuse  # type: ignore[method-assign]
    assert asyncio.run(r.ensure({"eth0": "generic"})) == (False, True)
    assert plane.calls == [] and "event=link_dump_failed" in caplog.text
