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
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_NEWLINK, RTMGRP_LINK
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

__all__ = ["Link", "LinkWatcher", "link_from_message"]

log = logging.getLogger(__name__)

_RECV_BUFFER = 1 << 20
_STOP_POLL = 0.2  # how often the reader thread looks at its stop flag
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
        self.resync_interval = resync_interval
        self._links: dict[int, Link] = {}  # by ifindex (reader thread writes, under the lock)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._stopping = threading.Event()
        self._loaded = threading.Event()
        self.events = 0  # link messages read, dumps included
        self.changed_at = time.monotonic()  # when what ``links()`` returns last changed

    async def start(self) -> None:
        """Subscribe to link events, then read every link once (in the reader thread); returns when that is done."""
        self._loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECV_BUFFER)
        sock.bind((0, RTMGRP_LINK))  # first: no change between the dump and the subscription is lost
        self._socket = sock
        self._thread = threading.Thread(target=self._read_events, name="xdplb-links", daemon=True)
        self._thread.start()
        await asyncio.to_thread(self._loaded.wait)

    def close(self) -> None:
        """Stop the reader thread and release the socket."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * _STOP_POLL + 1)
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def links(self) -> dict[int, Link]:
        """Every interface of the namespace, by ifindex (a copy)."""
        with self._lock:
            return dict(self._links)

    def resync(self) -> dict[int, Link]:
        """Read every link now (blocking: call it in a worker thread) and return what was read, by ifindex."""
        return self._dump()

    # reader thread

    def _read_events(self) -> None:
        try:
            self._dump()
        except Exception as error:  # events still come; the next resync reads the rest
            log.error("event=link_dump_failed error=%s", error)
        finally:
            self._loaded.set()
        marshal = MarshalRtnl()
        sock = self._socket
        assert sock is not None
        resync_at = time.monotonic() + self.resync_interval
        while not self._stopping.is_set():
            if time.monotonic() >= resync_at:  # a driver may lose its program without a message
                resync_at = time.monotonic() + self.resync_interval
                self._safe_dump()
            try:
                readable, _, _ = select.select([sock], [], [], _STOP_POLL)
                if not readable:
                    continue
                data = sock.recv(1 << 16)
            except OSError as error:
                if self._stopping.is_set():
                    return
                # ENOBUFS: messages were lost; read every link again so nothing stays stale.
                log.warning("event=link_events_lost error=%s action=reread_links", error)
                self._safe_dump()
                continue
            self._apply(marshal.parse(data))

    def _safe_dump(self) -> None:
        try:
            self._dump()
        except Exception as error:  # the next resync tries again
            log.error("event=link_dump_failed error=%s", error)

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
