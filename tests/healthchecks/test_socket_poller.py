"""The bare-socket poller that runs plain HTTP checks: its own deadlines, and nothing left open after."""

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

import hc_servers
from healthchecks import _http_response, _socket_poller

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


async def test_each_exchange_ends_at_its_own_deadline_not_in_start_order(raw_server: Any) -> None:
    server = await raw_server(hc_servers.silent)
    poller = _socket_poller.poller()
    timeouts = [1.0, 0.2, 0.6]
    begun = time.monotonic()
    exchanges = [
        poller.start(socket.AF_INET, ("127.0.0.1", server.port), REQUEST, reader(), timeout) for timeout in timeouts
    ]
    ended: dict[float, float] = {}

    async def wait(timeout: float, exchange: _socket_poller.Exchange) -> None:
        with pytest.raises(TimeoutError):
            await exchange.future
        ended[timeout] = time.monotonic() - begun
        assert exchange.phase == "waiting for the response"

    await asyncio.gather(*(wait(t, e) for t, e in zip(timeouts, exchanges, strict=True)))
    assert sorted(ended, key=ended.__getitem__) == sorted(timeouts)
    for timeout, took in ended.items():
        assert timeout - 0.02 <= took < timeout + 0.35, (timeout, took)  # uvloop's clock is per iteration


async def test_a_connect_that_never_completes_times_out_connecting() -> None:
    with full_listener() as port:
        exchange = _socket_poller.poller().start(socket.AF_INET, ("127.0.0.1", port), REQUEST, reader(), 0.2)
        with pytest.raises(TimeoutError):
            await exchange.future
        assert exchange.phase == "connecting"


async def test_a_refused_connect_is_the_error_and_a_good_answer_the_result(http_app: hc_servers.HttpApp) -> None:
    poller = _socket_poller.poller()
    refused = poller.start(socket.AF_INET, ("127.0.0.1", hc_servers.closed_port()), REQUEST, reader(), 1.0)
    with pytest.raises(ConnectionRefusedError):
        await refused.future
    request = REQUEST.replace(b"GET / ", b"GET /status/503 ")
    answered = poller.start(socket.AF_INET, ("127.0.0.1", http_app.port), request, reader(), 1.0)
    await answered.future
    assert (answered.reader.done, answered.reader.status) == (True, 503)


async def test_cancelled_and_finished_exchanges_leave_no_descriptor_open(raw_server: Any) -> None:
    server = await raw_server(hc_servers.silent)
    poller = _socket_poller.poller()
    before = hc_servers.open_fds()
    exchanges = [poller.start(socket.AF_INET, ("127.0.0.1", server.port), REQUEST, reader(), 5.0) for _ in range(20)]
    assert hc_servers.open_fds() >= before + 21  # twenty sockets and the poller's epoll
    for exchange in exchanges:
        exchange.future.cancel()
    for _ in range(100):  # the server's side of each connection closes when its reset arrives
        await asyncio.sleep(0.01)
        if hc_servers.open_fds() <= before:
            break
    assert hc_servers.open_fds() == before


async def test_a_deadline_below_the_loops_timer_resolution_still_ends_and_the_next_exchange_starts(
    raw_server: Any,
) -> None:
    # uvloop runs a timer due in under half a millisecond as a plain callback, whose handle has no ``when()``.
    server = await raw_server(hc_servers.silent)
    poller = _socket_poller.poller()
    address = ("127.0.0.1", server.port)
    first = poller.start(socket.AF_INET, address, REQUEST, reader(), 0.0001)
    second = poller.start(socket.AF_INET, address, REQUEST, reader(), 0.05)
    for exchange in (first, second):
        with pytest.raises(TimeoutError):
            await exchange.future
