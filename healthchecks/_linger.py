"""Check sockets close with a reset (``SO_LINGER`` {1, 0}), as HAProxy's checks do: no TIME_WAIT is left behind.

``transport.abort()`` alone sends a FIN here, and each check then left a TIME_WAIT socket holding a local port for
60 s: at thousands of checks a second that exhausts the ports towards a backend.
"""

import asyncio
import socket
import struct

__all__ = ["RESET", "reset_on_close", "reset_socket"]

RESET = struct.pack("ii", 1, 0)  # struct linger {l_onoff = 1, l_linger = 0}


def reset_on_close(transport: asyncio.BaseTransport) -> None:
    """Make closing ``transport`` (``abort()`` or ``close()``) send a reset; call it in ``connection_made``."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)


def reset_socket(
    addr_info: tuple[int, int, int, str, tuple[str, int] | tuple[str, int, int, int]], *, mark: int | None = None
) -> socket.socket:
    """A socket for aiohttp's ``TCPConnector(socket_factory=...)`` that closes with a reset; ``mark``: its SO_MARK
    (a check through the data path)."""
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=type_, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
    if mark is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
    return sock
