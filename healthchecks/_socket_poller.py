"""Plain HTTP checks on bare non-blocking sockets, many per loop wake-up: the cost of a check at scale.

An asyncio transport costs about 100 µs of CPU per connection in this process (the transport, its protocol, its
handle in the loop); at 5,000 checks a second that is a core. Here every check socket is registered in one epoll
of the poller's own, and the event loop watches only that one descriptor: a wake-up serves every socket that is
ready, with a ``connect``, a ``send``, a ``recv`` and a ``close`` per check and nothing else. About a fifth of the
CPU, measured in ``make bench-healthchecks``.
"""

import asyncio
import errno
import heapq
import itertools
import os
import select
import socket
import weakref

from healthchecks import _http_response, _linger

__all__ = ["Exchange", "SocketPoller", "poller"]

_RECV_BYTES = 65536
_TICK = 0.01  # deadlines are enforced this often at most: one timer for all open exchanges, not one each
# Edge-triggered, both ways from the start: one epoll_ctl per socket (closing it unregisters it).
_EVENTS = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET
_NEWS = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLERR | select.EPOLLHUP  # something to read, or an end


class Exchange:
    """One request and its response on a new connection; ``phase`` says where it is, for a timeout's reason."""

    __slots__ = ("sock", "request", "reader", "future", "phase", "deadline")

    def __init__(
        self,
        sock: socket.socket,
        request: bytes,
        reader: _http_response.ResponseReader,
        future: "asyncio.Future[None]",
        deadline: float,
    ) -> None:
        self.sock = sock
        self.request = request
        self.reader = reader
        self.future = future
        self.phase = "connecting"
        self.deadline = deadline


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
    ) -> Exchange:
        """Connect to ``address`` and send ``request``; ``future`` ends once ``reader`` is done, or with the error:
        ``TimeoutError`` once ``timeout`` seconds have passed. Cancelling the future closes the connection.
        """
        loop = self._loop
        future = loop.create_future()
        sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        exchange = Exchange(sock, request, reader, future, loop.time() + timeout)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _linger.RESET)
            code = sock.connect_ex(address)
        except OSError as error:
            sock.close()
            future.set_exception(error)
            return exchange
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            future.set_exception(OSError(code, os.strerror(code)))
            return exchange
        fd = sock.fileno()
        if self._epoll is None:
            self._epoll = select.epoll()
            self._loop.add_reader(self._epoll.fileno(), self._ready)
        self._open[fd] = exchange
        self._epoll.register(fd, _EVENTS)
        future.add_done_callback(lambda _: self._close(fd, exchange))
        heapq.heappush(self._deadlines, (exchange.deadline, next(self._order), exchange))
        if self._timer is None or exchange.deadline < self._timer_at - _TICK:
            self._arm(exchange.deadline)
        return exchange

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = self._loop.call_at(when, self._expire), when

    def _expire(self) -> None:
        """Fail the exchanges whose deadline has passed, and come back for the next one."""
        self._timer = None
        now = self._loop.time()
        deadlines = self._deadlines
        while deadlines and (deadlines[0][0] <= now or deadlines[0][2].future.done()):
            _, _, exchange = heapq.heappop(deadlines)
            if not exchange.future.done():
                exchange.future.set_exception(TimeoutError())
        if deadlines:
            self._arm(max(deadlines[0][0], now + _TICK))

    def _close(self, fd: int, exchange: Exchange) -> None:
        if self._open.get(fd) is not exchange:
            return
        del self._open[fd]
        exchange.sock.close()
        if not self._open and self._epoll is not None:
            # Closed while idle, so that a poller holds no descriptor between checks, nor after its loop.
            self._loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
            self._epoll = None

    def _ready(self) -> None:
        if self._epoll is None:
            return
        for fd, events in self._epoll.poll(0):
            exchange = self._open.get(fd)
            if exchange is None or exchange.future.done():
                continue
            try:
                if exchange.phase == "connecting":
                    self._send(exchange)
                    if not events & _NEWS:
                        continue
                if exchange.phase != "connecting":
                    self._receive(exchange)
            except (OSError, _http_response.BadResponse) as error:
                exchange.future.set_exception(error)

    @staticmethod
    def _send(exchange: Exchange) -> None:
        # A failed connect shows here: send() raises its error (ECONNREFUSED and the like).
        try:
            sent = exchange.sock.send(exchange.request)
        except BlockingIOError:
            return
        exchange.request = exchange.request[sent:]
        if not exchange.request:
            exchange.phase = "waiting for the response"

    @staticmethod
    def _receive(exchange: Exchange) -> None:
        # Edge-triggered: read until the response is complete or the socket has no more for now.
        reader, sock = exchange.reader, exchange.sock
        while not reader.done:
            try:
                data = sock.recv(_RECV_BYTES)
            except BlockingIOError:
                return
            if not data:
                reader.feed_eof()
                break
            reader.feed(data)
        exchange.future.set_result(None)


_pollers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SocketPoller]" = weakref.WeakKeyDictionary()


def poller() -> SocketPoller:
    """The running loop's poller, made on first use."""
    loop = asyncio.get_running_loop()
    found = _pollers.get(loop)
    if found is None:
        found = _pollers[loop] = SocketPoller(loop)
    return found
