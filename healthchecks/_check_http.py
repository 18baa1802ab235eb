"""The lean HTTP(S) check: HTTP/1.1 on bare sockets (plain HTTP) or an asyncio protocol (HTTPS).

A new connection per check by default (what proves the service accepts connections); with ``keepalive`` the
connection is reused while the server allows it, which spares both ends a TCP handshake and teardown per check.
Connections are closed with a reset (no TIME_WAIT left behind, as HAProxy does for its checks), so thousands of
checks a second do not exhaust local ports.
"""

import asyncio
import socket
import typing
from collections.abc import Callable

import config
from healthchecks import _failure, _http_response, _http_spec, _linger, _marked, _socket_poller

__all__ = ["LeanHttpChecker"]


class _ResponseProtocol(asyncio.Protocol):
    """Feeds received bytes to the current ``ResponseReader`` and resolves ``waiter`` when it is done."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader: _http_response.ResponseReader | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.usable = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not isinstance: uvloop's and the default loop's transports do not all subclass asyncio's classes.
        self.transport = typing.cast(asyncio.Transport, transport)
        _linger.reset_on_close(transport)

    def expect(self, reader: _http_response.ResponseReader, waiter: asyncio.Future[None]) -> None:
        self.reader, self.waiter = reader, waiter

    def data_received(self, data: bytes) -> None:
        waiter, reader = self.waiter, self.reader
        if waiter is None or reader is None or waiter.done():
            self.usable = False  # bytes nobody asked for: the connection cannot carry another check
            return
        try:
            reader.feed(data)
        except _http_response.BadResponse as error:
            waiter.set_exception(error)
            return
        if reader.done:
            waiter.set_result(None)

    def eof_received(self) -> bool:
        self.usable = False
        waiter, reader = self.waiter, self.reader
        if waiter is not None and reader is not None and not waiter.done():
            try:
                reader.feed_eof()
            except _http_response.BadResponse as error:
                waiter.set_exception(error)
                return False
            waiter.set_result(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc or ConnectionResetError("connection closed"))


class _BareRun:
    """One check on bare sockets: its exchange, and one more on a new connection when a kept one had been closed.

    An object rather than closures: a callback that restarts itself would be a reference cycle per check, left to
    the garbage collector thousands of times a second."""

    __slots__ = ("checker", "done", "poller", "exchange")

    def __init__(
        self, checker: "LeanHttpChecker", done: Callable[[_failure.Verdict], None], kept: socket.socket | None
    ) -> None:
        self.checker = checker
        self.done = done
        self.poller = _socket_poller.poller()
        self.exchange = checker._exchange_on(self.poller, checker._spec.timeout, self.ended, kept)

    def ended(self, exchange: _socket_poller.Exchange, error: BaseException | None) -> None:
        checker = self.checker
        if error is not None and exchange.reused and not isinstance(error, TimeoutError):
            left = exchange.deadline - asyncio.get_running_loop().time()
            if left > 0:
                # The server closed the idle connection meanwhile; that proves nothing, so ask again.
                self.exchange = checker._exchange_on(self.poller, left, self.ended, None)
                return
        if exchange.keep:
            checker._kept = exchange.sock
        self.done(checker._verdict(exchange, error))

    def abandon(self) -> None:
        self.poller.cancel(self.exchange)


class LeanHttpChecker:
    """Runs one HTTP(S) check against one backend; ``run()`` never raises and never outlives the timeout."""

    def __init__(
        self, check: config.HttpCheck, address: config.IpAddress, port: int, *, mark: int | None = None
    ) -> None:
        self._spec = _http_spec.HttpSpec(check, address, port)
        self._mark = mark
        self._keepalive = check.keepalive
        self._request = self._spec.request(keepalive=check.keepalive)
        self._head_only = check.method == "HEAD"
        self._max_body = check.max_body_bytes
        self._idle: _ResponseProtocol | None = None
        self._kept: socket.socket | None = None  # plain HTTP's kept-alive connection, between checks
        # Plain HTTP, the common case, takes the cheap path of bare sockets.
        self._family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        self._sockaddr = (str(address), port)
        self.bare = not self._spec.tls  # plain HTTP runs on bare sockets, from the scheduler's timers

    async def run(self) -> _failure.Verdict:
        if self.bare:
            return await self._run_bare()
        spec = self._spec
        phase = "connecting"
        protocol = None
        try:
            async with asyncio.timeout(spec.timeout):
                protocol = self._take_idle()
                reused = protocol is not None
                if protocol is None:
                    protocol = await self._connect()
                phase = "waiting for the response"
                try:
                    reader = await self._exchange(protocol)
                except (ConnectionError, _http_response.BadResponse):
                    if not reused:
                        raise
                    # The server closed the idle connection meanwhile; that proves nothing, so ask again.
                    protocol.usable = False
                    self._drop(protocol)
                    phase = "connecting"
                    protocol = await self._connect()
                    phase = "waiting for the response"
                    reader = await self._exchange(protocol)
        except _http_response.BadResponse as error:
            self._drop(protocol)
            return False, str(error)
        except (OSError, TimeoutError) as error:
            self._drop(protocol)
            return False, _failure.describe_error(error, timeout=spec.timeout, phase=phase)
        except BaseException:
            self._drop(protocol)
            raise
        if reader.reusable and protocol.usable:
            self._idle = protocol
        else:
            self._drop(protocol)
        return spec.judge(reader.status, bytes(reader.body), truncated=reader.truncated)

    @property
    def start(self) -> _failure.Start | None:
        return self._start if self.bare else None

    def _start(self, done: Callable[[_failure.Verdict], None]) -> Callable[[], None]:
        kept, self._kept = self._kept, None
        return _BareRun(self, done, kept).abandon

    def _exchange_on(
        self, poller: _socket_poller.SocketPoller, timeout: float, done: _socket_poller.Done, kept: socket.socket | None
    ) -> _socket_poller.Exchange:
        return poller.start(
            self._family, self._sockaddr, self._request, self._reader(), timeout, done,
            mark=self._mark, kept=kept, keep=self._keepalive,
        )  # fmt: skip

    async def _run_bare(self) -> _failure.Verdict:
        future: asyncio.Future[_failure.Verdict] = asyncio.get_running_loop().create_future()
        cancel = self._start(future.set_result)
        try:
            return await future
        finally:
            cancel()

    def _verdict(self, exchange: _socket_poller.Exchange, error: BaseException | None) -> _failure.Verdict:
        spec = self._spec
        if isinstance(error, _http_response.BadResponse):
            return False, str(error)
        if error is not None:
            return False, _failure.describe_error(error, timeout=spec.timeout, phase=exchange.phase)
        reader = exchange.reader
        return spec.judge(reader.status, bytes(reader.body), truncated=reader.truncated)

    def _reader(self) -> _http_response.ResponseReader:
        return _http_response.ResponseReader(
            head_only=self._head_only,
            want_body=self._spec.want_body,
            keepalive=self._keepalive,
            max_body=self._max_body,
        )

    async def close(self) -> None:
        """Drop a kept-alive connection, if any."""
        self.release()

    def release(self) -> None:
        """Drop a kept-alive connection, if any, now."""
        self._drop(self._take_idle())
        kept, self._kept = self._kept, None
        if kept is not None:
            kept.close()

    def _take_idle(self) -> _ResponseProtocol | None:
        protocol, self._idle = self._idle, None
        transport = protocol.transport if protocol is not None else None
        if protocol is not None and (not protocol.usable or transport is None or transport.is_closing()):
            self._drop(protocol)
            return None
        return protocol

    async def _connect(self) -> _ResponseProtocol:
        spec = self._spec
        _, protocol = await _marked.connect(
            _ResponseProtocol, spec.address, spec.port, self._mark, ssl=spec.ssl, server_hostname=spec.server_hostname
        )
        return protocol

    async def _exchange(self, protocol: _ResponseProtocol) -> _http_response.ResponseReader:
        reader = self._reader()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        protocol.expect(reader, waiter)
        assert protocol.transport is not None
        protocol.transport.write(self._request)
        await waiter
        return reader

    @staticmethod
    def _drop(protocol: _ResponseProtocol | None) -> None:
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abort()
