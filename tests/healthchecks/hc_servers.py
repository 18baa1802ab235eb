"""Real servers on loopback for the health-check tests: HTTP(S) on aiohttp, raw misbehaving TCP, a DNS responder."""

import asyncio
import datetime
import ipaddress
import pathlib
import socket
import ssl
import struct
import typing
from collections.abc import Callable

from aiohttp import web

LOOPBACK = ipaddress.IPv4Address("127.0.0.1")


# --- HTTP on aiohttp ---------------------------------------------------------------------------------------------


class HttpApp:
    """An aiohttp server whose routes cover what the HTTP check looks at; it records what it saw."""

    def __init__(self) -> None:
        self.requests: list[web.Request] = []
        self.peers: set[tuple[str, int]] = set()
        self.status = 200  # of /flip
        app = web.Application()
        app.router.add_route("*", "/ok", self._ok)
        app.router.add_get("/status/{code}", self._status)
        app.router.add_get("/flip", self._flip)
        app.router.add_get("/redirect", self._redirect)
        app.router.add_get("/huge", self._huge)
        app.router.add_get("/chunked", self._chunked)
        self.app = app
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> "HttpApp":
        self.runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        server = typing.cast(asyncio.Server | None, site._server)  # the loop's server (asyncio's or uvloop's)
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def _seen(self, request: web.Request) -> None:
        self.requests.append(request)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            self.peers.add(tuple(peer[:2]))

    async def _ok(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(text="hello, service is alive")

    async def _status(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(status=int(request.match_info["code"]), text="status page")

    async def _flip(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(status=self.status, text="flip")

    async def _redirect(self, request: web.Request) -> web.Response:
        self._seen(request)
        raise web.HTTPMovedPermanently("/ok")

    async def _huge(self, request: web.Request) -> web.StreamResponse:
        """10 MB of filler with the word 'needle' only at the very end."""
        self._seen(request)
        response = web.StreamResponse()
        response.content_length = 10 * 1024 * 1024 + 6
        await response.prepare(request)
        block = b"x" * 65536
        try:
            for _ in range(160):
                await response.write(block)
            await response.write(b"needle")
        except (ConnectionError, RuntimeError):
            pass
        return response

    async def _chunked(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b"service ", b"is ", b"alive"):
            await response.write(part)
        await response.write_eof()
        return response


# --- raw TCP servers that misbehave ------------------------------------------------------------------------------

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], "asyncio.Future[None] | object"]


class RawServer:
    """A TCP server on loopback that runs ``behaviour(reader, writer)`` for each connection; counts connections."""

    def __init__(self, behaviour: Callable[[asyncio.StreamReader, asyncio.StreamWriter], object]) -> None:
        self.behaviour = behaviour
        self.connections = 0
        self.open = 0
        self.server: asyncio.Server | None = None
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> "RawServer":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self._writers.add(writer)
        try:
            result = self.behaviour(reader, writer)
            if asyncio.iscoroutine(result):
                await result
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self.open -= 1
            self._writers.discard(writer)
            writer.transport.abort()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.sleep(0)


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept and never answer (until the client gives up)."""
    await reader.read()  # returns at the client's EOF/RST


async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1)
    writer.write(b"\x16\x03\x01 this is not http at all \x00\xff\r\n\r\n")
    await writer.drain()
    await reader.read()


async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the request, then close with a RST (SO_LINGER 0)."""
    await reader.read(1)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the request, then close cleanly without a byte of answer."""
    await reader.read(1)
    writer.close()


async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A valid status line, then one header byte every 50 ms forever."""
    await reader.read(1)
    writer.write(b"HTTP/1.1 200 OK\r\n")
    for _ in range(2000):
        writer.write(b"X")
        await writer.drain()
        await asyncio.sleep(0.05)


async def endless_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A valid status line, then header lines as fast as the client reads them."""
    await reader.read(1)
    writer.write(b"HTTP/1.1 200 OK\r\n")
    line = b"X-Filler: " + b"y" * 1000 + b"\r\n"
    for _ in range(100_000):
        writer.write(line)
        await writer.drain()


def http_status(status_of: Callable[[], int]) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], object]:
    """A minimal HTTP/1.1 responder whose status comes from ``status_of()`` at each request."""

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 %d X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok" % status_of())
        await writer.drain()
        writer.close()

    return behaviour


def http_kept(requests: int) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], object]:
    """An HTTP/1.1 responder that keeps the connection open for ``requests`` answers (none says it will close),
    then closes it: as a server whose idle timeout ended a kept connection between two checks."""

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(requests):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        await asyncio.sleep(0.05)  # idle, then the server's idle timeout ends the connection
        writer.close()

    return behaviour


async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"+OK ready\r\n")
    await writer.drain()
    await reader.read()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(4096):
        writer.write(data)
        await writer.drain()


def closed_port() -> int:
    """A loopback port nobody listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- DNS ---------------------------------------------------------------------------------------------------------


class DnsResponder:
    """A DNS server on UDP and TCP (same port) whose answers ``mode`` picks; counts queries."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.queries = 0
        self.port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    async def start(self) -> "DnsResponder":
        loop = asyncio.get_running_loop()
        for _ in range(20):
            port = closed_port()
            try:
                self._tcp = await asyncio.start_server(self._handle_tcp, "127.0.0.1", port)
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _DnsUdp(self), local_addr=("127.0.0.1", port)
                )
            except OSError:
                if self._tcp is not None:
                    self._tcp.close()
                continue
            self._udp, self.port = transport, port
            return self
        raise RuntimeError("no free port for the DNS responder")

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()

    def answer(self, query: bytes) -> bytes | None:
        self.queries += 1
        if self.mode == "silent" or len(query) < 12:
            return None
        if self.mode == "garbage":
            return b"\x00\x01garbage"
        ident = struct.unpack_from("!H", query)[0]
        end = query.index(b"\x00", 12) + 5
        question = query[12:end]
        rcode = {"nxdomain": 3, "servfail": 2}.get(self.mode, 0)
        if self.mode == "wrong_id":
            ident ^= 0xFFFF
        if self.mode == "wrong_question":
            question = b"\x05other\x00" + question[-4:]
        answer = b""
        ancount = 0
        if self.mode in ("ok", "bad_record"):
            # An SOA record whose owner name is a compression pointer to the question name.
            rdata = b"\x02ns\xc0\x0c\x0ahostmaster\xc0\x0c" + struct.pack("!IIIII", 1, 3600, 600, 86400, 60)
            rdlength = len(rdata) + (40 if self.mode == "bad_record" else 0)
            answer = b"\xc0\x0c" + struct.pack("!HHIH", 6, 1, 60, rdlength) + rdata
            ancount = 1
        header = struct.pack("!HHHHHH", ident, 0x8180 | rcode, 1, ancount, 0, 0)
        return header + question + answer

    async def _handle_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            size = struct.unpack("!H", await reader.readexactly(2))[0]
            reply = self.answer(await reader.readexactly(size))
            if reply is None:
                await reader.read()
            else:
                writer.write(struct.pack("!H", len(reply)) + reply if self.mode != "garbage" else reply)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()


class _DnsUdp(asyncio.DatagramProtocol):
    def __init__(self, responder: DnsResponder) -> None:
        self.responder = responder
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self.responder.answer(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


# --- certificates ------------------------------------------------------------------------------------------------


def make_certificates(directory: pathlib.Path) -> dict[str, pathlib.Path]:
    """A CA, a valid leaf for localhost/127.0.0.1 and an expired one, as PEM files: ca, good, expired (+ keys)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "xdplb test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=30))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": directory / "ca.pem"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for name, start, end in (
        ("good", now - datetime.timedelta(days=1), now + datetime.timedelta(days=1)),
        ("expired", now - datetime.timedelta(days=10), now - datetime.timedelta(days=2)),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(LOOPBACK)]), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        paths[name] = directory / f"{name}.pem"
        paths[name].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{name}-key"] = directory / f"{name}-key.pem"
        paths[f"{name}-key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return paths


def server_context(paths: dict[str, pathlib.Path], which: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(paths[which], paths[f"{which}-key"])
    return context


def open_fds() -> int:
    return len(list(pathlib.Path("/proc/self/fd").iterdir()))
