"""Backend MAC addresses from the kernel's neighbour table (ARP / NDP), kept up to date by netlink events.

``NeighbourWatcher`` reads the table once at start and then follows ``RTMGRP_NEIGH`` events in a thread of its
own, so its cost is in proportion to what changes, never to the table's size, and none of it runs on the event
loop. It keeps every neighbour per (interface, address); a backend's next hop (``bpf.NextHop``: MAC and
ifindex) is its usable entry on one of the balancer's interfaces (any interface when none is given): on the
interface its address is pinned to when it is (``watch(pinned=)``, the config's ``interface:``), else on the
lowest-numbered one that has an entry for it. That ifindex is where the data plane sends its frames, and where
the source MAC comes from. An entry on a VLAN device (``eth0.100``) of an attached trunk counts as an entry on the
trunk, VLAN 100: the data plane tags the frames itself and sends them out of the trunk. A backend with no usable
entry (none yet, FAILED, deleted) is unresolved, and ``probe()`` sends it one small datagram so the kernel resolves
it; answers then arrive as events. The kernel refreshes entries by itself while health checks talk to the backends.

Works in the network namespace of the thread that calls ``start()``.
"""

import asyncio
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl import RTM_DELNEIGH, RTM_NEWNEIGH, RTMGRP_NEIGH

import bpf
import config
from balancer import netlink_events

__all__ = ["NeighbourWatcher", "neighbour_table_limits", "vlan_of"]

log = logging.getLogger(__name__)

MacChanges = dict[config.IpAddress, bpf.NextHop | None]

# NUD states with a usable link-layer address (include/uapi/linux/neighbour.h).
_NUD_REACHABLE, _NUD_STALE, _NUD_DELAY, _NUD_PROBE, _NUD_NOARP, _NUD_PERMANENT = 0x02, 0x04, 0x08, 0x10, 0x40, 0x80
_USABLE = _NUD_REACHABLE | _NUD_STALE | _NUD_DELAY | _NUD_PROBE | _NUD_NOARP | _NUD_PERMANENT
_DISCARD_PORT = 9
_RECV_BUFFER = 4 << 20  # room for a burst of events (a whole subnet resolving at once)


class NeighbourWatcher:
    """Follows the kernel's neighbour table and reports MAC changes of the addresses that matter.

    ``on_change`` is called on the event loop that ran ``start()``, with the changed next hops (None:
    unresolved) of watched addresses only. ``interfaces`` are the ifindexes whose entries count (empty: all),
    or the attached interfaces by name (``DataPlane.attached_ifindexes``), which pins can name.
    """

    def __init__(
        self,
        on_change: Callable[[MacChanges], None],
        *,
        interfaces: Collection[int] | Mapping[str, int] = (),
        link_info: Callable[[int], tuple[int, int]] | None = None,
    ) -> None:
        self._on_change = on_change
        self._link_info = link_info or vlan_of  # ifindex -> (trunk ifindex, VID), for entries off the attached ones
        self._trunks: dict[int, tuple[int, int]] = {}  # its answers by ifindex (reader thread)
        self._interfaces, self._names = _interfaces(interfaces)
        self._pinned: dict[config.IpAddress, str] = {}  # address -> the interface name its entry must be on
        self._entries: dict[config.IpAddress, dict[int, tuple[str, int]]] = {}  # address -> ifindex -> (MAC, VID)
        self._watched: frozenset[config.IpAddress] = frozenset()
        self._macs: dict[config.IpAddress, bpf.NextHop | None] = {}  # last reported, per watched address (loop)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events = netlink_events.NetlinkEvents(
            group=RTMGRP_NEIGH, name="xdplb-neighbours", dump=self._dump, apply=self._apply,
            receive_buffer=_RECV_BUFFER,
        )  # fmt: skip
        self.events = 0  # netlink messages read, dump included

    async def start(self) -> None:
        """Subscribe to events, then read the table once (in the reader thread); returns when that read is done."""
        self._loop = asyncio.get_running_loop()
        await self._events.start()

    def close(self) -> None:
        """Stop the reader thread and release the socket."""
        self._events.close()

    def watch(
        self, addresses: Iterable[config.IpAddress], *, pinned: Mapping[config.IpAddress, str] | None = None
    ) -> MacChanges:
        """Set the addresses whose next hops matter, and the interface (by name) each pinned one is on; returns
        the next hop of each newly watched or newly pinned one (None: unresolved)."""
        with self._lock:
            wanted = frozenset(addresses)
            pins = {a: name for a, name in (pinned or {}).items() if a in wanted}
            new = (wanted - self._watched) | {a for a in wanted if pins.get(a) != self._pinned.get(a)}
            self._watched = wanted
            self._pinned = pins
            found = {address: self._usable(address) for address in new}
        for address in [a for a in self._macs if a not in wanted]:
            del self._macs[address]
        self._macs.update(found)
        return found

    def set_interfaces(self, interfaces: Collection[int] | Mapping[str, int]) -> None:
        """Count entries on these ifindexes from now on (an interface re-created has a new one); call it on the
        event loop: next hops that change by it are reported as usual."""
        with self._lock:
            self._interfaces, self._names = _interfaces(interfaces)
            found = {address: self._usable(address) for address in self._watched}
        self._report(found)

    def mac(self, address: config.IpAddress) -> str | None:
        """The MAC last reported for a watched address."""
        hop = self._macs.get(address)
        return None if hop is None else hop.mac

    def next_hop(self, address: config.IpAddress) -> bpf.NextHop | None:
        """The next hop (MAC and interface) last reported for a watched address."""
        return self._macs.get(address)

    def unresolved(self) -> list[config.IpAddress]:
        """Watched addresses with no usable entry."""
        return [address for address, mac in self._macs.items() if mac is None]

    def probe(self, addresses: Iterable[config.IpAddress]) -> None:
        """Make the kernel resolve these addresses: one empty datagram to each one's discard port.

        Call it from a worker thread for many addresses: a send costs a few microseconds.
        """
        sockets: dict[int, socket.socket] = {}
        try:
            for address in addresses:
                family = socket.AF_INET if address.version == 4 else socket.AF_INET6
                sock = sockets.get(family)
                if sock is None:
                    sock = sockets[family] = socket.socket(family, socket.SOCK_DGRAM)
                    sock.setblocking(False)
                try:
                    sock.sendto(b"", (str(address), _DISCARD_PORT))
                except OSError as error:  # unreachable right now: the next probe tries again
                    log.debug("event=neighbour_probe_failed backend=%s error=%s", address, error)
        finally:
            for sock in sockets.values():
                sock.close()

    # reader thread

    def _dump(self) -> None:
        with IPRoute() as ipr:  # made in this thread: pyroute2's sync API refuses a thread with a running loop
            messages = [*ipr.get_neighbours(family=socket.AF_INET), *ipr.get_neighbours(family=socket.AF_INET6)]
        self._apply(messages, replace=True)

    def _trunk(self, ifindex: int) -> tuple[int, int]:
        """(ifindex, 0), or (its trunk, VID) for a VLAN device: asked once per ifindex (never reused soon)."""
        if ifindex in self._interfaces:
            return ifindex, 0
        known = self._trunks.get(ifindex)
        if known is None:
            try:
                known = self._link_info(ifindex)
            except Exception as error:  # gone already: its entries go with it
                log.debug("event=neighbour_link_unknown ifindex=%d error=%s", ifindex, error)
                known = (ifindex, 0)
            self._trunks[ifindex] = known
        return known

    def _apply(self, messages: Iterable[Any], *, replace: bool = False) -> None:
        changed: set[config.IpAddress] = set()
        messages = list(messages)
        trunks = {m["ifindex"]: self._trunk(m["ifindex"]) for m in messages if m.get_attr("NDA_DST") is not None}
        with self._lock:
            if replace:
                changed.update(self._entries)
                self._entries = {}
            for message in messages:
                self.events += 1
                kind = message["header"]["type"]
                if kind not in (RTM_NEWNEIGH, RTM_DELNEIGH):
                    continue
                dst, mac = message.get_attr("NDA_DST"), message.get_attr("NDA_LLADDR")
                if dst is None:
                    continue
                address = ipaddress.ip_address(dst)
                ifindex, vlan = trunks[message["ifindex"]]
                by_interface = self._entries.setdefault(address, {})
                if kind == RTM_NEWNEIGH and mac is not None and message["state"] & _USABLE:
                    by_interface[ifindex] = (mac, vlan)
                else:
                    by_interface.pop(ifindex, None)
                if not by_interface:
                    del self._entries[address]
                changed.add(address)
            report = {address: self._usable(address) for address in changed & self._watched}
        if report and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._report, report)

    def _usable(self, address: config.IpAddress) -> bpf.NextHop | None:
        by_interface = self._entries.get(address, {})
        pin = self._pinned.get(address)
        if pin is not None:
            ifindex = self._names.get(pin)
            entry = None if ifindex is None else by_interface.get(ifindex)
            return None if ifindex is None or entry is None else bpf.NextHop(entry[0], ifindex, entry[1])
        for ifindex, (mac, vlan) in sorted(by_interface.items()):
            if not self._interfaces or ifindex in self._interfaces:
                return bpf.NextHop(mac, ifindex, vlan)
        return None

    # event loop

    def _report(self, found: Mapping[config.IpAddress, bpf.NextHop | None]) -> None:
        changed = {
            address: mac for address, mac in found.items() if address in self._macs and self._macs[address] != mac
        }
        if not changed:
            return
        self._macs.update(changed)
        for address, hop in changed.items():
            if hop is None:
                log.info("event=backend_mac backend=%s mac=unresolved", address)
            else:
                log.info("event=backend_mac backend=%s mac=%s ifindex=%d", address, hop.mac, hop.ifindex)
        self._on_change(changed)


def vlan_of(ifindex: int) -> tuple[int, int]:
    """(trunk ifindex, VID) when ``ifindex`` is an 802.1Q/802.1ad device, else (``ifindex``, 0); in the calling
    thread's network namespace. A blocking netlink call: from the reader thread."""
    with IPRoute() as ipr:
        link = ipr.get_links(ifindex)[0]
    if link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "vlan":
        trunk = link.get_attr("IFLA_LINK")
        vid = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_VLAN_ID")
        if trunk and vid:
            return int(trunk), int(vid)
    return ifindex, 0


def _interfaces(interfaces: Collection[int] | Mapping[str, int]) -> tuple[frozenset[int], dict[str, int]]:
    """(ifindexes whose entries count, ifindex by name where names were given)."""
    if isinstance(interfaces, Mapping):
        return frozenset(interfaces.values()), dict(interfaces)
    return frozenset(interfaces), {}


def neighbour_table_limits(family: int = 4) -> dict[str, int]:
    """The kernel's neighbour-table garbage-collection thresholds (``gc_thresh1..3``) for IPv4 or IPv6."""
    name = "ipv4" if family == 4 else "ipv6"
    out = {}
    for key in ("gc_thresh1", "gc_thresh2", "gc_thresh3"):
        try:
            with open(f"/proc/sys/net/{name}/neigh/default/{key}") as file:
                out[key] = int(file.read())
        except (OSError, ValueError):
            continue
    return out
