"""The kernel's interfaces and the XDP programs on them, kept up to date by netlink link events.

``LinkWatcher`` reads every link once at start and then follows ``RTMGRP_LINK`` events in a thread of its own
(like ``neighbours.NeighbourWatcher``): an interface added, deleted, renamed, or its XDP program attached, detached
or replaced each arrive as an ``RTM_NEWLINK``/``RTM_DELLINK`` message. It only records what it reads and wakes its
owner; the daemon decides what to do (``link_reattach``) and does it, as the data plane's one writer.

Lost events (ENOBUFS) and a driver that loses its program without saying so are covered by reading every link
again: at once after ENOBUFS, every ``resync_interval`` seconds otherwise. A namespace has a few interfaces, so a
read costs about a millisecond.

Works in the network namespace of the thread that calls ``start()``.
"""

import asyncio
import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_NEWLINK, RTMGRP_LINK

from balancer import netlink_events

__all__ = ["Link", "LinkWatcher", "link_from_message"]

log = logging.getLogger(__name__)

_RECV_BUFFER = 1 << 20
# IFLA_XDP_*_PROG_ID (include/uapi/linux/if_link.h): the program attached in each mode, absent when none.
_PROG_IDS = {"IFLA_XDP_DRV_PROG_ID": "native", "IFLA_XDP_SKB_PROG_ID": "generic", "IFLA_XDP_HW_PROG_ID": "offload"}


@dataclasses.dataclass(frozen=True)
class Link:
    """One interface as the kernel last described it."""

    ifindex: int
    name: str
    xdp: Mapping[str, int]  # attach mode ("native", "generic", "offload") -> id of the program attached in it


def link_from_message(message: Any) -> Link:
    """The ``Link`` an ``RTM_NEWLINK`` message (pyroute2's ``ifinfmsg``) describes."""
    xdp: dict[str, int] = {}
    nested = message.get_attr("IFLA_XDP")
    if nested is not None:
        for attr, mode in _PROG_IDS.items():
            prog_id = nested.get_attr(attr)
            if prog_id:
                xdp[mode] = int(prog_id)
    return Link(ifindex=int(message["index"]), name=str(message.get_attr("IFLA_IFNAME")), xdp=xdp)


class LinkWatcher:
    """Follows the namespace's interfaces; ``on_change()`` is called on the event loop that ran ``start()`` each
    time what ``links()`` returns changed (a burst of messages makes one call)."""

    def __init__(self, on_change: Callable[[], None], *, resync_interval: float = 10.0) -> None:
        self._on_change = on_change
        self._links: dict[int, Link] = {}  # by ifindex (reader thread writes, under the lock)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events = netlink_events.NetlinkEvents(
            group=RTMGRP_LINK, name="xdplb-links", dump=self._dump, apply=self._apply,
            receive_buffer=_RECV_BUFFER, resync_interval=resync_interval,
        )  # fmt: skip
        self.events = 0  # link messages read, dumps included
        self.changed_at = time.monotonic()  # when what ``links()`` returns last changed

    async def start(self) -> None:
        """Subscribe to link events, then read every link once (in the reader thread); returns when that is done."""
        self._loop = asyncio.get_running_loop()
        await self._events.start()

    def close(self) -> None:
        """Stop the reader thread and release the socket."""
        self._events.close()

    def links(self) -> dict[int, Link]:
        """Every interface of the namespace, by ifindex (a copy)."""
        with self._lock:
            return dict(self._links)

    def resync(self) -> dict[int, Link]:
        """Read every link now (blocking: call it in a worker thread) and return what was read, by ifindex."""
        return self._dump()

    # reader thread

    def _dump(self) -> dict[int, Link]:
        with IPRoute() as ipr:  # made in this thread: pyroute2's sync API refuses a thread with a running loop
            messages = list(ipr.get_links())
        return self._apply(messages, replace=True)

    def _apply(self, messages: Iterable[Any], *, replace: bool = False) -> dict[int, Link]:
        with self._lock:
            before = self._links
            links = {} if replace else dict(before)
            for message in messages:
                self.events += 1
                kind = message["header"]["type"]
                if message["family"] != socket.AF_UNSPEC:  # a bridge port's own messages (AF_BRIDGE): partial
                    continue
                if kind == RTM_NEWLINK:
                    link = link_from_message(message)
                    links[link.ifindex] = link
                elif kind == RTM_DELLINK:
                    links.pop(int(message["index"]), None)
            self._links = links
            changed = links != before
            if changed:
                self.changed_at = time.monotonic()
        if changed and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._on_change)
        return links
