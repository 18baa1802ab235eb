"""Messages between the core's process and its checker processes: length-prefixed pickles on a Unix socket.

Both ends are this package, started by the same installation, so pickle's trust model holds: the socket is a
socketpair that no other process can reach.
"""

import asyncio
import pickle
import struct
from typing import Any

__all__ = ["MAX_FRAME", "FrameError", "RunRecord", "encode", "read"]

RunRecord = tuple[str, int, bool, str, float, float, float]
"""One check run on the wire: key, check index, ok, reason, duration, wall time, lag (cheaper than a CheckRun)."""

_HEADER = struct.Struct("!I")
MAX_FRAME = 256 << 20
"""The largest message accepted: a whole shard of 10,000 targets is a few MB."""


class FrameError(ValueError):
    """A message that cannot be read: too long, or not a pickle of ours."""


def encode(message: Any) -> bytes:
    """One message as bytes to write."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    if len(payload) > MAX_FRAME:
        raise FrameError(f"message of {len(payload)} bytes is over the {MAX_FRAME} byte limit")
    return _HEADER.pack(len(payload)) + payload


async def read(reader: asyncio.StreamReader) -> Any | None:
    """The next message, or None at the end of the stream (the other process closed it or died)."""
    try:
        header = await reader.readexactly(_HEADER.size)
        (size,) = _HEADER.unpack(header)
        if size > MAX_FRAME:
            raise FrameError(f"message of {size} bytes is over the {MAX_FRAME} byte limit")
        payload = await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    try:
        return pickle.loads(payload)
    except Exception as error:
        raise FrameError(f"unreadable message: {type(error).__name__}: {error}") from error
