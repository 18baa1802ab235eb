"""Bounds on the API's connections, so that clients can never take the file descriptors health checks need.

Measured before: 500 never-finished connections were all kept open, and under systemd's default soft limit of
1,024 descriptors health checks then failed with "too many open files" and a VIP was withdrawn. Now:

- ``raise_open_file_limit`` lifts the soft ``RLIMIT_NOFILE`` to the hard one at start (the unit sets
  ``LimitNOFILE=``);
- ``connection_limit``: the API holds at most ``api.max_connections``, and never more than the open-file limit
  less a reserve (``api.fd_reserve`` plus one per configured check, each of which may have a socket open);
- ``ConnectionGuard`` counts open connections, in all and per client address, and resets one over either limit at
  once (``SO_LINGER`` 0: its descriptor is freed at once and it leaves no TIME_WAIT);
- aiohttp's ``keepalive_timeout`` (``api.idle_timeout``) runs from the moment a connection is accepted until a
  request is complete, and again between requests: a connection that sends nothing, or its headers too slowly, is
  closed after it (``tests/api/test_api_flood.py`` holds this against aiohttp upgrades).
"""

import asyncio
import logging
import resource
import socket
import struct
from collections.abc import Callable
from typing import cast

import config

__all__ = ["ACCEPT_BURST", "ConnectionGuard", "connection_limit", "open_file_limit", "raise_open_file_limit"]

log = logging.getLogger(__name__)

_LINGER_RESET = struct.pack("ii", 1, 0)
ACCEPT_BURST = 128
"""The listen backlog, and how many connections asyncio accepts in one go before any is admitted or reset: each
holds a descriptor until then, so the limit leaves room for them too."""


def open_file_limit() -> int:
    """The soft ``RLIMIT_NOFILE`` of this process (a large number when unlimited)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def raise_open_file_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; the soft limit in force after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError) as error:  # an infinite hard limit is refused by some kernels
            log.warning("event=nofile_not_raised soft=%s hard=%s error=%s", soft, hard, error)
    log.info("event=nofile_limit soft=%d", open_file_limit())
    return open_file_limit()


def connection_limit(running: config.XdplbConfig, nofile: int) -> int:
    """API connections allowed under ``running`` with ``nofile`` descriptors: ``api.max_connections``, capped at
    ``nofile`` less ``api.fd_reserve``, one descriptor per configured check and ``ACCEPT_BURST`` (at least 1)."""
    checks = sum(len(running.resolved_checks(service, backend)) for service, backend in running.backends())
    return max(1, min(running.api.max_connections, nofile - running.api.fd_reserve - checks - ACCEPT_BURST))


class ConnectionGuard:
    """Admits a connection while fewer than ``limit()`` are open, and fewer than ``per_client()`` from its address.

    ``protocol_factory(inner)`` wraps aiohttp's (``runner.server``) for ``loop.create_server``. ``on_refused``
    gets ``"connection_limit"`` or ``"client_limit"`` for every connection reset.
    """

    def __init__(
        self,
        *,
        limit: Callable[[], int],
        per_client: Callable[[], int],
        on_refused: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self._limit = limit
        self._per_client = per_client
        self._on_refused = on_refused
        self.open = 0
        self._by_client: dict[str, int] = {}

    def protocol_factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A factory whose connections are counted, and admitted or reset."""
        return lambda: _GuardedConnection(self, inner)

    def admit(self, client: str) -> str | None:
        """Count a new connection from ``client``; None if admitted, else the reason it is refused."""
        if self.open >= self._limit():
            reason = "connection_limit"
        elif self._by_client.get(client, 0) >= self._per_client():
            reason = "client_limit"
        else:
            self.open += 1
            self._by_client[client] = self._by_client.get(client, 0) + 1
            return None
        self._on_refused(reason)
        return reason

    def release(self, client: str) -> None:
        """Forget an admitted connection that closed."""
        self.open -= 1
        left = self._by_client.pop(client) - 1
        if left:
            self._by_client[client] = left


class _GuardedConnection(asyncio.Protocol):
    """Stands between the transport and aiohttp's protocol, which it builds only once the connection is admitted."""

    def __init__(self, guard: ConnectionGuard, inner: Callable[[], asyncio.Protocol]) -> None:
        self._guard = guard
        self._make_inner = inner
        self._inner: asyncio.Protocol | None = None
        self._client = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP listener's transport; not an isinstance check: uvloop's transports are not asyncio's classes.
        transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._client = str(peer[0]) if isinstance(peer, tuple) else ""
        reason = self._guard.admit(self._client)
        if reason is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            log.debug("event=api_connection_refused remote=%s reason=%s", self._client, reason)
            transport.abort()
            return
        self._inner = self._make_inner()
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is not None:
            self._guard.release(self._client)
            inner, self._inner = self._inner, None
            inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()
