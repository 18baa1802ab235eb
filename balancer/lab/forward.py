"""Expose a TCP port inside a lab namespace on this machine's 127.0.0.1 (the console and /metrics of the demo)."""

import asyncio
import logging
import socket

from balancer.lab.netns import Host

__all__ = ["forward_localhost"]

log = logging.getLogger(__name__)


async def forward_localhost(port: int, host: Host, host_port: int, *, address: str = "127.0.0.1") -> asyncio.Server:
    """Accept on 127.0.0.1:``port`` here and relay each connection to ``address``:``host_port`` inside ``host``.

    This is how a browser on the machine reaches the console or /metrics of a daemon inside the lab; it runs in
    the calling process's event loop, no root-namespace interface or route is touched. ``port=0`` picks a free
    port (``server.sockets[0].getsockname()[1]``). Close it with ``server.close(); await server.wait_closed()``.

        server = await forward_localhost(8080, lab.hosts["lb"], 9100)
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    loop = asyncio.get_running_loop()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except OSError:
            writer.close()

    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        with host.entered():  # no await inside: only the socket's creation needs the namespace
            sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (address, host_port))
            inner_reader, inner_writer = await asyncio.open_connection(sock=sock)
        except OSError as exc:
            log.warning("event=lab_forward_failed netns=%s target=%s:%d error=%r", host.netns, address, host_port, exc)
            sock.close()
            client_writer.close()
            return
        try:
            await asyncio.gather(pipe(client_reader, inner_writer), pipe(inner_reader, client_writer))
        finally:
            inner_writer.close()
            client_writer.close()

    return await asyncio.start_server(relay, "127.0.0.1", port)
