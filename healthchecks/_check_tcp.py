"""The TCP check: connect, optionally send bytes, optionally expect the reply to start with a prefix."""

import asyncio
import typing

import config
from healthchecks import _errors, _failure, _linger, _marked

__all__ = ["TcpChecker", "unescape"]


def unescape(text: str) -> bytes:
    r"""The bytes of ``text`` with backslash escapes applied: ``"PING\r\n"`` → ``b"PING\r\n"``.

    >>> unescape(r"PING\r\n")
    b'PING\r\n'
    """
    return text.encode("utf-8").decode("unicode_escape").encode("latin-1")


def _bytes(text: str | None, field: str) -> bytes:
    try:
        return unescape(text) if text else b""
    except (UnicodeDecodeError, UnicodeEncodeError) as error:
        message = f"tcp check {field}: bad escape or a character beyond \\xff: {error.reason}"
        raise _errors.HealthCheckConfigError(message, field=field) from None


class _PrefixProtocol(asyncio.Protocol):
    """Collects up to ``want`` bytes and resolves ``waiter`` when it has them or the peer closes."""

    def __init__(self, want: int, waiter: asyncio.Future[None]) -> None:
        self.want = want
        self.waiter = waiter
        self.data = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not isinstance: uvloop's and the default loop's transports do not all subclass asyncio's classes.
        self.transport = typing.cast(asyncio.Transport, transport)
        _linger.reset_on_close(transport)

    def data_received(self, data: bytes) -> None:
        self.data += data
        if len(self.data) >= self.want and not self.waiter.done():
            self.waiter.set_result(None)

    def eof_received(self) -> bool:
        if not self.waiter.done():
            self.waiter.set_result(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.waiter.done():
            if exc is None:
                self.waiter.set_result(None)
            else:
                self.waiter.set_exception(exc)


class TcpChecker:
    """Runs one TCP check against one backend; ``run()`` never raises and never outlives the timeout."""

    start: _failure.Start | None = None

    def __init__(
        self, check: config.TcpCheck, address: config.IpAddress, port: int, *, mark: int | None = None
    ) -> None:
        self._address = str(address)
        self._mark = mark
        self._port = port
        self._timeout = check.timing.timeout
        self._send = _bytes(check.send, "send")
        self._expect = _bytes(check.expect, "expect")

    async def run(self) -> _failure.Verdict:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        protocol = _PrefixProtocol(len(self._expect), waiter)
        phase = "connecting"
        try:
            async with asyncio.timeout(self._timeout):
                await _marked.connect(lambda: protocol, self._address, self._port, self._mark)
                if not self._expect:
                    if self._send and protocol.transport is not None:
                        protocol.transport.write(self._send)
                    return True, "connected"
                phase = "waiting for the reply"
                if self._send and protocol.transport is not None:
                    protocol.transport.write(self._send)
                await waiter
        except (OSError, TimeoutError) as error:
            return False, _failure.describe_error(error, timeout=self._timeout, phase=phase)
        finally:
            if protocol.transport is not None:
                protocol.transport.abort()
        reply = bytes(protocol.data[: len(self._expect)])
        if reply == self._expect:
            return True, "reply matches"
        if not reply:
            return False, "connection closed without a reply"
        return False, f"reply {reply[:32]!r} does not start with {self._expect[:32]!r}"

    async def close(self) -> None:
        """Nothing is kept between checks."""

    def release(self) -> None:
        """Nothing is kept between checks."""
