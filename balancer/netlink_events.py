"""A netlink subscription read in a thread of its own: the kernel's table once, then its events.

``NeighbourWatcher`` and ``LinkWatcher`` are built on it. The socket joins the multicast group before the table
is read, so no change between the two is lost; when the socket overflows (ENOBUFS: events were dropped) the
table is read again, and with ``resync_interval`` it is also read again that often, for state that can change
without a message.
"""

import asyncio
import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from pyroute2.netlink.rtnl.marshal import MarshalRtnl

__all__ = ["NetlinkEvents"]

log = logging.getLogger(__name__)

_STOP_POLL = 0.2  # how often the reader thread looks at its stop flag


class NetlinkEvents:
    """Calls ``dump()`` (which reads the table and applies it) once, then ``apply(messages)`` for every batch of
    events of ``group`` on NETLINK_ROUTE, in a reader thread named ``name``; ``start()`` returns after the first
    ``dump()``. Both callbacks run in the reader thread."""

    def __init__(
        self,
        *,
        group: int,
        name: str,
        dump: Callable[[], object],
        apply: Callable[[Iterable[Any]], object],
        receive_buffer: int = 1 << 20,
        resync_interval: float | None = None,
    ) -> None:
        self._group = group
        self._name = name
        self._dump = dump
        self._apply = apply
        self._receive_buffer = receive_buffer
        self.resync_interval = resync_interval
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._stopping = threading.Event()
        self._loaded = threading.Event()

    async def start(self) -> None:
        """Subscribe, then read the table once in the reader thread; returns when that read is done."""
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._receive_buffer)
        sock.bind((0, self._group))  # first: no change between the dump and the subscription is lost
        self._socket = sock
        self._thread = threading.Thread(target=self._read_events, name=self._name, daemon=True)
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

    def _safe_dump(self, why: str) -> None:
        try:
            self._dump()
        except Exception as error:  # events still come; the next resync or overflow reads the rest
            log.error("event=netlink_dump_failed reader=%s when=%s error=%s", self._name, why, error)

    def _read_events(self) -> None:
        try:
            self._safe_dump("start")
        finally:
            self._loaded.set()
        marshal = MarshalRtnl()
        sock = self._socket
        assert sock is not None
        resync_at = time.monotonic() + self.resync_interval if self.resync_interval else None
        while not self._stopping.is_set():
            if resync_at is not None and self.resync_interval and time.monotonic() >= resync_at:
                resync_at = time.monotonic() + self.resync_interval
                self._safe_dump("resync")
            try:
                readable, _, _ = select.select([sock], [], [], _STOP_POLL)
                if not readable:
                    continue
                data = sock.recv(1 << 16)
            except OSError as error:
                if self._stopping.is_set():
                    return
                # ENOBUFS: events were lost; read the table again so nothing stays stale.
                log.warning("event=netlink_events_lost reader=%s error=%s action=reread", self._name, error)
                self._safe_dump("overflow")
                continue
            self._apply(marshal.parse(data))
