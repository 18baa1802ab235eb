"""The bare-socket poller that runs plain HTTP checks: its own deadlines, and nothing left open after."""

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any


from healthchecks import _http_response, _socket_poller
from tests.healthchecks import hc_servers

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def reader() -> _http_response.ResponseReader:
    return _http_response.ResponseReader(head_only=False, want_body=False, keepalive=False, max_body=1024)


@contextlib.contextmanager
def full_listener() -> Iterator[int]:
    """A loopback port whose accept queue is full: the kernel drops further SYNs, so a connect never completes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(2):  # a backlog of 0 still queues one; two make sure the queue is full
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.05)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def begin(
    address: tuple[str, int], timeout: float, request: bytes = REQUEST
) -> tuple[_socket_poller.Exchange, "asyncio.Future[BaseException | None]"]:
    """Start an exchange on the running loop's poller; the future gets what its ``done`` was called with."""
    ended: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
    exchange = _socket_poller.poller().start(
        socket.AF_INET, address, request, reader(), timeout, lambda _, error: ended.set_result(error)
    )
    return exchange, ended


async def test_each_exchange_ends_at_its_own_deadline_not_in_start_order(raw_server: Any) -> None:
    server = await raw_server(hc_servers.silent)
    timeouts = [1.0, 0.2, 0.6]
    begun = time.monotonic()
    started = [begin(("127.0.0.1", server.port), timeout) for timeout in timeouts]
    took: dict[float, float] = {}

    async def wait(timeout: float, exchange: _socket_poller.Exchange, ended: "asyncio.Future[Any]") -> None:
        assert isinstance(await ended, TimeoutError)
        took[timeout] = time.monotonic() - begun
        assert exchange.phase == "waiting for the response"

    await asyncio.gather(*(wait(t, *pair) for t, pair in zip(timeouts, started, strict=True)))
    assert sorted(took, key=took.__getitem__) == sorted(timeouts)
    for timeout, seconds in took.items():
        assert timeout - 0.02 <= seconds < timeout + 0.35, (timeout, seconds)  # uvloop's clock is per iteration


async def test_a_connect_that_never_completes_times_out_connecting() -> None:
    with full_listener() as port:
        exchange, ended = begin(("127.0.0.1", port), 0.2)
        assert isinstance(await ended, TimeoutError)
        assert exchange.phase == "connecting"


async def test_a_refused_connect_is_the_error_and_a_good_answer_the_result(http_app: hc_servers.HttpApp) -> None:
    _, refused = begin(("127.0.0.1", hc_servers.closed_port()), 1.0)
    assert isinstance(await refused, ConnectionRefusedError)
    answered, ended = begin(("127.0.0.1", http_app.port), 1.0, REQUEST.replace(b"GET / ", b"GET /status/503 "))
    assert await ended is None
    assert (answered.reader.done, answered.reader.status) == (True, 503)


async def test_abandoned_and_finished_exchanges_leave_no_descriptor_open(raw_server: Any) -> None:
    server = await raw_server(hc_servers.silent)
    before = hc_servers.open_fds()
    started = [begin(("127.0.0.1", server.port), 0.3) for _ in range(20)]
    assert hc_servers.open_fds() >= before + 21  # twenty sockets and the poller's epoll
    for exchange, _ in started[:10]:
        _socket_poller.poller().cancel(exchange)
    await asyncio.gather(*(ended for _, ended in started[10:]))
    for _ in range(100):  # the server's side of each connection closes when its reset arrives
        await asyncio.sleep(0.01)
        if hc_servers.open_fds() <= before:
            break
    assert hc_servers.open_fds() == before
    assert not any(ended.done() for _, ended in started[:10]), "an abandoned exchange is never called back"


async def test_a_deadline_below_the_loops_timer_resolution_still_ends_and_the_next_exchange_starts(
    raw_server: Any,
) -> None:
    # uvloop runs a timer due in under half a millisecond as a plain callback, whose handle has no ``when()``.
    server = await raw_server(hc_servers.silent)
    address = ("127.0.0.1", server.port)
    _, first = begin(address, 0.0001)
    _, second = begin(address, 0.05)
    for ended in (first, second):
        assert isinstance(await ended, TimeoutError)


@contextlib.contextmanager
def answering_thread() -> Iterator[int]:
    """A loopback server in a thread of its own (so it answers while the loop is blocked): a 200, 0.1 s after the
    request."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(5)

    def serve() -> None:
        with contextlib.suppress(OSError):
            connection, _ = listener.accept()
            with connection:
                connection.recv(4096)
                time.sleep(0.1)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                connection.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(5)


async def test_an_answer_that_arrived_in_time_counts_when_the_loop_was_too_busy_to_read_it() -> None:
    # Busy in an I/O callback past the deadline: uvloop then runs due timers before it reads the sockets again.
    loop = asyncio.get_running_loop()
    wake, nudge = socket.socketpair()

    def busy_reading() -> None:
        wake.recv(1)
        time.sleep(0.4)

    loop.add_reader(wake.fileno(), busy_reading)
    try:
        with answering_thread() as port:
            exchange, ended = begin(("127.0.0.1", port), 0.2)
            async with asyncio.timeout(5):
                while exchange.phase == "connecting":
                    await asyncio.sleep(0.005)
            nudge.send(b"x")
            assert await ended is None
            assert exchange.reader.status == 200
    finally:
        loop.remove_reader(wake.fileno())
        wake.close()
        nudge.close()
