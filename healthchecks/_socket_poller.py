"""Plain HTTP checks on bare non-blocking sockets, many per loop wake-up: the cost of a check at scale.

An exchange runs on a new connection, or on one kept open by the exchange before it (keep-alive checks). Every check
socket is registered, edge-triggered, in one epoll of the poller's own, and the event loop watches only that one
descriptor: a wake-up serves every socket that is ready, with a ``socket``, ``connect``, ``send``, ``recv`` and
``close`` per check and no transport, protocol, future or asyncio timeout. Deadlines are the poller's own (one heap,
one timer). A kept connection is out of the epoll between exchanges. Completion is a callback, so the scheduler runs
these checks from its timers without a task per check. ``make bench-healthchecks``: 5,900 checks per CPU-second
(14,400 on kept connections) against 3,800 for the same checker on its asyncio-protocol path (2,000 backends every
0.5 s on loopback, 2026-12-03); most of what is left is the kernel's TCP handshake.
"""

import asyncio
import errno
import heapq
import itertools
import logging
import os
import select
import socket
import weakref
from collections.abc import Callable

from healthchecks import _http_response, _linger

__all__ = ["Done", "Exchange", "SocketPoller", "poller"]

log = logging.getLogger(__name__)

_RECV_BYTES = 65536
_TICK = 0.01  # deadlines are enforced this often at most: one timer for all open exchanges, not one each
# Edge-triggered, both ways from the start: one epoll_ctl per socket (closing it unregisters it).
_EVENTS = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET
_NEWS = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLERR | select.EPOLLHUP  # something to read, or an end


Done = Callable[["Exchange", BaseException | None], None]
"""Called once when an exchange ends: with None when its reader is done, else with the error (``TimeoutError``
when the deadline passed, ``OSError``, ``BadResponse``). Never called for a cancelled exchange."""


class Exchange:
    """One request and its response, on a new connection or a kept one (``reused``); ``phase`` says where it is,
    for a timeout's reason. ``keep`` is still true after the end only when ``sock`` was left open for the next."""

    __slots__ = ("sock", "request", "reader", "done", "phase", "deadline", "ended", "reused", "keep")

    def __init__(
        self,
        sock: socket.socket,
        request: bytes,
        reader: _http_response.ResponseReader,
        done: Done,
        deadline: float,
        *,
        reused: bool = False,
        keep: bool = False,
    ) -> None:
        self.sock = sock
        self.request = request
        self.reader = reader
        self.done: Done | None = done
        self.phase = "waiting for the response" if reused else "connecting"
        self.deadline = deadline
        self.ended = False
        self.reused = reused
        self.keep = keep


class SocketPoller:
    """Runs exchanges for one event loop on one epoll, which exists, watched by the loop, while any is open."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._epoll: select.epoll | None = None
        self._open: dict[int, Exchange] = {}
        self._deadlines: list[tuple[float, int, Exchange]] = []
        self._order = itertools.count()
        self._timer: asyncio.Handle | None = None
        self._timer_at = 0.0  # when _timer fires (uvloop's handles do not say)

    def start(
        self,
        family: socket.AddressFamily,
        address: tuple[str, int],
        request: bytes,
        reader: _http_response.ResponseReader,
        timeout: float,
        done: Done,
        *,
        mark: int | None = None,
        kept: socket.socket | None = None,
        keep: bool = False,
    ) -> Exchange:
        """Connect to ``address``, send ``request`` and feed the response to ``reader``; ``done`` is called later
        (never from here), within ``timeout`` seconds. ``mark``: the socket's SO_MARK (a check through the data
        path). ``kept``: a connection left open by an earlier exchange, used instead of a new one. ``keep``: leave
        the connection open at the end when the response allows it (``exchange.keep`` then says so)."""
        loop = self._loop
        deadline = loop.time() + timeout
        if kept is not None:
            exchange = Exchange(kept, request, reader, done, deadline, reused=True, keep=keep)
        else:
            sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
            exchange = Exchange(sock, request, reader, done, deadline, keep=keep)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _linger.RESET)
                if mark is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
                code = sock.connect_ex(address)
                if code not in (0, errno.EINPROGRESS):
                    raise OSError(code, os.strerror(code))
            except OSError as error:
                sock.close()
                exchange.ended, exchange.done, exchange.keep = True, None, False
                loop.call_soon(done, exchange, error)
                return exchange
        fd = exchange.sock.fileno()
        if self._epoll is None:
            self._epoll = select.epoll()
            loop.add_reader(self._epoll.fileno(), self._ready)
        self._open[fd] = exchange
        self._epoll.register(fd, _EVENTS)
        heapq.heappush(self._deadlines, (exchange.deadline, next(self._order), exchange))
        if self._timer is None or exchange.deadline < self._timer_at - _TICK:
            self._arm(exchange.deadline)
        return exchange

    def cancel(self, exchange: Exchange) -> None:
        """End ``exchange`` now, without calling its ``done``."""
        if not exchange.ended:
            self._end(exchange)
            self._idle()

    def _end(self, exchange: Exchange, *, keep: bool = False) -> Done | None:
        exchange.ended = True
        fd = exchange.sock.fileno()
        self._open.pop(fd, None)
        exchange.keep = keep = keep and self._epoll is not None
        exchange.reader.close()
        if keep and self._epoll is not None:
            self._epoll.unregister(fd)  # idle until the next exchange registers it again
        else:
            exchange.sock.close()  # which also takes it out of the epoll
        # Dropped, not kept: the callback's closures refer back to the exchange, and a cycle per check would leave
        # thousands a second to the garbage collector.
        done, exchange.done = exchange.done, None
        return done

    def _finish(self, exchange: Exchange, error: BaseException | None) -> None:
        done = self._end(exchange, keep=error is None and exchange.keep and exchange.reader.reusable)
        if done is None:
            return
        try:
            done(exchange, error)
        except Exception:
            log.exception("event=check_callback_failed")

    def _idle(self) -> None:
        # Closed while idle, so that a poller holds no descriptor between checks, nor after its loop.
        if not self._open and self._epoll is not None:
            self._loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
            self._epoll = None

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = self._loop.call_at(when, self._expire), when

    def _expire(self) -> None:
        """End the exchanges whose deadline has passed, and come back for the next one."""
        self._timer = None
        # What arrived in time counts, even when a busy loop runs this timer before the reads: read it first.
        self._ready()
        now = self._loop.time()
        deadlines = self._deadlines
        while deadlines and (deadlines[0][0] <= now or deadlines[0][2].ended):
            _, _, exchange = heapq.heappop(deadlines)
            if not exchange.ended:
                self._finish(exchange, TimeoutError())
        if deadlines:
            self._arm(max(deadlines[0][0], now + _TICK))
        self._idle()

    def _ready(self) -> None:
        if self._epoll is None:
            return
        for fd, events in self._epoll.poll(0):
            exchange = self._open.get(fd)
            if exchange is None:
                continue
            try:
                if exchange.request:
                    self._send(exchange)
                    if exchange.request or not events & _NEWS:
                        continue
                if self._receive(exchange):
                    self._finish(exchange, None)
            except (OSError, _http_response.BadResponse) as error:
                self._finish(exchange, error)
        self._idle()

    @staticmethod
    def _send(exchange: Exchange) -> None:
        # A failed connect shows here: send() raises its error (ECONNREFUSED and the like), as does a kept
        # connection that the server closed meanwhile (EPIPE, ECONNRESET).
        try:
            sent = exchange.sock.send(exchange.request)
        except BlockingIOError:
            return
        exchange.request = exchange.request[sent:]
        if not exchange.request:
            exchange.phase = "waiting for the response"

    @staticmethod
    def _receive(exchange: Exchange) -> bool:
        """Read until the response is complete (True) or the socket has no more for now: edge-triggered."""
        reader, sock = exchange.reader, exchange.sock
        while not reader.done:
            try:
                data = sock.recv(_RECV_BYTES)
            except BlockingIOError:
                return False
            if not data:
                reader.feed_eof()
                break
            reader.feed(data)
        return True


_pollers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SocketPoller]" = weakref.WeakKeyDictionary()


def poller() -> SocketPoller:
    """The running loop's poller, made on first use."""
    loop = asyncio.get_running_loop()
    found = _pollers.get(loop)
    if found is None:
        found = _pollers[loop] = SocketPoller(loop)
    return found
