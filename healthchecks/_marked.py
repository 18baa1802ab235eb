"""Sockets of checks through the data path: marked with ``SO_MARK``, which the data plane's tc program turns into
"to this VIP, by this backend's forwarding" (``bpf.check_path``). Without a mark, plain asyncio connections."""

import asyncio
import socket
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["connect", "datagram", "marked_socket"]

_P = TypeVar("_P", bound=asyncio.BaseProtocol)


def marked_socket(family: int, type_: int, mark: int | None, proto: int = 0) -> socket.socket:
    """A non-blocking socket, with ``SO_MARK`` set when ``mark`` is given (needs CAP_NET_ADMIN)."""
    sock = socket.socket(family, type_ | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, proto)
    if mark is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        except OSError:
            sock.close()
            raise
    return sock


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


async def connect(
    factory: Callable[[], _P], address: str, port: int, mark: int | None, **kwargs: Any
) -> tuple[asyncio.Transport, _P]:
    """``loop.create_connection`` to ``address``:``port`` (``kwargs``: ssl, server_hostname), from a marked socket."""
    loop = asyncio.get_running_loop()
    if mark is None:
        return await loop.create_connection(factory, address, port, **kwargs)
    sock = marked_socket(_family(address), socket.SOCK_STREAM, mark)
    try:
        await loop.sock_connect(sock, (address, port))
        return await loop.create_connection(factory, sock=sock, **kwargs)
    except BaseException:
        sock.close()
        raise


async def datagram(
    factory: Callable[[], _P], address: str, port: int, mark: int | None
) -> tuple[asyncio.DatagramTransport, _P]:
    """``loop.create_datagram_endpoint`` connected to ``address``:``port``, from a marked socket."""
    loop = asyncio.get_running_loop()
    if mark is None:
        return await loop.create_datagram_endpoint(factory, remote_addr=(address, port))
    sock = marked_socket(_family(address), socket.SOCK_DGRAM, mark)
    try:
        sock.connect((address, port))
        return await loop.create_datagram_endpoint(factory, sock=sock)
    except BaseException:
        sock.close()
        raise
