"""The DNS check: one query over UDP or TCP; it passes on a well-formed answer with the expected rcode.

Messages are built and parsed by dnspython; a reply must parse whole and answer our question (id, opcode and
question echoed), except a refusal that leaves the question out, which some servers send.
"""

import asyncio
import random
import struct
import typing

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode

import config
from healthchecks import _errors, _failure, _marked

__all__ = ["DnsChecker"]


class BadDnsReply(Exception):
    """The reply is not a well-formed answer to our question; ``str()`` says what is wrong."""


def read_reply(question: dns.message.Message, data: bytes) -> tuple[str, int]:
    """(rcode, answer records) of ``data`` as a reply to ``question``; BadDnsReply when it is not one."""
    try:
        # A truncated reply (TC) may end anywhere after its question: only that much is read.
        head = dns.message.from_wire(data, question_only=True)
        truncated = bool(head.flags & dns.flags.TC)
        reply = head if truncated else dns.message.from_wire(data)
    except dns.message.ShortHeader:
        raise BadDnsReply(f"reply of {len(data)} bytes is shorter than a DNS header") from None
    except dns.exception.DNSException as error:
        raise BadDnsReply(f"malformed reply ({type(error).__name__}: {error})") from None
    if reply.id != question.id:
        raise BadDnsReply(f"reply id {reply.id} does not match query id {question.id}")
    if not reply.flags & dns.flags.QR:
        raise BadDnsReply("message is a query, not a reply")
    if reply.opcode() != dns.opcode.QUERY:
        raise BadDnsReply(f"reply opcode {reply.opcode()}, expected 0 (QUERY)")
    rcode = dns.rcode.to_text(reply.rcode())
    if not reply.question and reply.rcode() != dns.rcode.NOERROR:
        return rcode, 0  # a refusal without the question
    if not question.is_response(reply):
        raise BadDnsReply(f"reply is for another question ({reply.question[0] if reply.question else 'none'})")
    return rcode, sum(len(rrset) for rrset in reply.answer)


class _UdpProtocol(asyncio.DatagramProtocol):
    """Waits for the first well-formed reply to our query; replies with another id are ignored (and counted)."""

    def __init__(self, query: bytes, check: config.DnsCheck, ident: int, waiter: asyncio.Future[bytes]) -> None:
        self.query, self.check, self.ident, self.waiter = query, check, ident, waiter
        self.ignored = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not isinstance: uvloop's and the default loop's transports do not all subclass asyncio's classes.
        typing.cast(asyncio.DatagramTransport, transport).sendto(self.query)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if self.waiter.done():
            return
        if len(data) >= 12 and int.from_bytes(data[:2], "big") != self.ident:
            self.ignored += 1  # a late or spoofed reply: keep waiting for ours
            return
        self.waiter.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.waiter.done():
            self.waiter.set_exception(exc)


class _TcpProtocol(asyncio.Protocol):
    """Reads one length-prefixed DNS message (RFC 1035 4.2.2)."""

    def __init__(self, waiter: asyncio.Future[bytes]) -> None:
        self.waiter = waiter
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) >= 2 and len(self.buf) >= 2 + int.from_bytes(self.buf[:2], "big") and not self.waiter.done():
            self.waiter.set_result(bytes(self.buf[2 : 2 + int.from_bytes(self.buf[:2], "big")]))

    def eof_received(self) -> bool:
        self.connection_lost(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionResetError(f"connection closed after {len(self.buf)} bytes"))


class DnsChecker:
    """Runs one DNS check against one backend; ``run()`` never raises and never outlives the timeout."""

    start: _failure.Start | None = None

    def __init__(
        self, check: config.DnsCheck, address: config.IpAddress, port: int, *, mark: int | None = None
    ) -> None:
        self._check = check
        self._mark = mark
        self._address = str(address)
        self._port = port
        self._timeout = check.timing.timeout
        try:
            dns.name.from_text(check.name)  # a bad name fails here, when the check is set up
        except (dns.exception.DNSException, UnicodeError) as error:
            raise _errors.HealthCheckConfigError(f"dns check: bad name {check.name!r}: {error}", field="name") from None

    async def run(self) -> _failure.Verdict:
        loop = asyncio.get_running_loop()
        check = self._check
        ident = random.getrandbits(16)
        question = dns.message.make_query(check.name, check.qtype)  # recursion desired, class IN
        question.id = ident
        query = question.to_wire()
        waiter: asyncio.Future[bytes] = loop.create_future()
        transport: asyncio.BaseTransport | None = None
        udp: _UdpProtocol | None = None
        phase = "connecting" if check.transport == "tcp" else "waiting for the reply"
        try:
            async with asyncio.timeout(self._timeout):
                if check.transport == "udp":
                    udp = _UdpProtocol(query, check, ident, waiter)
                    transport, _ = await _marked.datagram(lambda: udp, self._address, self._port, self._mark)
                else:
                    transport, _ = await _marked.connect(
                        lambda: _TcpProtocol(waiter), self._address, self._port, self._mark
                    )
                    transport.write(struct.pack("!H", len(query)) + query)
                    phase = "waiting for the reply"
                data = await waiter
        except (OSError, TimeoutError) as error:
            reason = _failure.describe_error(error, timeout=self._timeout, phase=phase)
            if udp is not None and udp.ignored:
                reason += f" ({udp.ignored} replies with a wrong id ignored)"
            return False, reason
        finally:
            if transport is not None:
                typing.cast(asyncio.DatagramTransport, transport).abort()
        try:
            rcode, answers = read_reply(question, data)
        except BadDnsReply as error:
            return False, f"bad DNS reply: {error}"
        if rcode != check.rcode:
            return False, f"rcode {rcode}, expected {check.rcode}"
        return True, f"rcode {rcode}, {answers} answers"

    async def close(self) -> None:
        """Nothing is kept between checks."""

    def release(self) -> None:
        """Nothing is kept between checks."""
