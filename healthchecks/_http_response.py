"""An incremental, bounded HTTP/1.1 response reader for the lean HTTP check.

It reads only what a health check needs: the status, and the body when the check looks at it or the connection is
to be reused. Every size is bounded, so a huge or endless response ends the check instead of filling memory.
"""

import re

__all__ = ["BadResponse", "ResponseReader"]

MAX_HEAD_BYTES = 65536

_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5]\d\d)(?: [^\r\n]*)?\r?\n")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[^\r\n]*\r?\n")


class BadResponse(Exception):
    """The peer's bytes are not an acceptable HTTP response; ``str()`` is the check's failure reason."""


class ResponseReader:
    """Fed with bytes as they arrive; ``done`` turns true once the check has all it needs.

    After ``done``: ``status``, ``body`` (at most ``max_body`` bytes, only when ``want_body``), and ``reusable``
    (the whole response was read, so a keep-alive connection can carry the next check).
    """

    def __init__(self, *, head_only: bool, want_body: bool, keepalive: bool, max_body: int) -> None:
        self._head_only = head_only
        self._want_body = want_body
        self._keepalive = keepalive
        self._max_body = max_body
        self._buf = bytearray()
        self._in_body = False
        self._mode = ""  # "length", "chunked" or "eof" once in the body
        self._left = 0  # bytes left in the body ("length") or in the current chunk ("chunked")
        self._chunk_state = "size"  # "size", "data", "crlf", "trailer"
        self.status = 0
        self.body = bytearray()
        self.done = False
        self.reusable = False
        self.truncated = False
        self._close = False  # the peer said "Connection: close"
        self._consumed = 0  # body bytes read so far, kept or not

    def feed(self, data: bytes) -> None:
        """Take more bytes; raises BadResponse with a reason when they cannot be a good response."""
        self._buf += data
        if not self._in_body:
            self._read_head()
        if self._in_body and not self.done:
            self._read_body()

    def feed_eof(self) -> None:
        """The peer closed its side: finish a read-until-close body or say what was missing."""
        if self.done:
            return
        if self._in_body and self._mode == "eof":
            self.done = True
            return
        if not self._in_body:
            raise BadResponse("connection closed before a complete response")
        if self._want_body:
            # The body the check looks at is incomplete, but what arrived is all there will be.
            self.truncated = True
            self.done = True
            return
        raise BadResponse("connection closed in the middle of the body")

    def _read_head(self) -> None:
        while True:
            if len(self._buf) >= 5 and not self._buf.startswith(b"HTTP/"):
                raise BadResponse(f"bad response: not HTTP: {bytes(self._buf[:16])!r}")
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEAD_BYTES:
                    raise BadResponse(f"bad response: head larger than {MAX_HEAD_BYTES} bytes")
                return
            head = bytes(self._buf[: end + 2])
            del self._buf[: end + 4]
            match = _STATUS_LINE.match(head)
            if match is None:
                line = head.split(b"\n", 1)[0]
                raise BadResponse(f"bad response: bad status line {line[:64]!r}")
            status = int(match[1])
            if 100 <= status < 200 and status != 101:
                continue  # an interim response (100 Continue); the real one follows
            self.status = status
            self._start_body(head[match.end() :], status)
            return

    def _start_body(self, headers: bytes, status: int) -> None:
        self._in_body = True
        length = -1
        chunked = False
        close = False
        for line in headers.split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    raise BadResponse(f"bad response: bad Content-Length {value.strip()[:32]!r}") from None
                if length < 0:
                    raise BadResponse("bad response: negative Content-Length")
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if self._head_only or status in (204, 304) or status == 101:
            self._finish(reusable=not close and status != 101)
        elif chunked:
            self._mode = "chunked"
        elif length >= 0:
            self._mode, self._left = "length", length
            if length == 0:
                self._finish(reusable=not close)
        else:
            self._mode = "eof"
        self._close = close
        if not self.done and not self._want_body and not self._keepalive:
            # The status is all the check looks at, and the connection is closed anyway.
            self.done = True

    def _finish(self, *, reusable: bool) -> None:
        self.done = True
        self.reusable = reusable and self._keepalive
        self.truncated = self._want_body and self._consumed > len(self.body)

    def _take(self, count: int) -> None:
        """Consume ``count`` body bytes from the buffer, keeping what the check may look at."""
        room = self._max_body - len(self.body)
        if self._want_body and room > 0:
            self.body += self._buf[: min(count, room)]
        del self._buf[:count]

    def _too_big(self) -> bool:
        """Stop at the body limit: the check has what it may look at, and the connection is not reused."""
        if len(self.body) >= self._max_body if self._want_body else self._consumed > self._max_body:
            self.truncated = True
            self.done = True
            return True
        return False

    def _read_body(self) -> None:
        if self._mode == "length":
            count = min(self._left, len(self._buf))
            self._take(count)
            self._left -= count
            self._consumed += count
            if self._left == 0:
                self._finish(reusable=not self._close)
            else:
                self._too_big()
        elif self._mode == "eof":
            self._consumed += len(self._buf)
            self._take(len(self._buf))
            self._too_big()
        else:
            self._read_chunks()

    def _read_chunks(self) -> None:
        while not self.done:
            if self._chunk_state == "size":
                match = _CHUNK_SIZE.match(self._buf)
                if match is None:
                    if len(self._buf) > 64 or b"\n" in self._buf:
                        raise BadResponse("bad response: bad chunked encoding")
                    return
                self._left = int(match[1], 16)
                del self._buf[: match.end()]
                self._chunk_state = "data" if self._left else "trailer"
            elif self._chunk_state == "data":
                count = min(self._left, len(self._buf))
                if count == 0:
                    return
                self._take(count)
                self._left -= count
                self._consumed += count
                if self._left == 0:
                    self._chunk_state = "crlf"
                if self._too_big():
                    return
            elif self._chunk_state == "crlf":
                if len(self._buf) < 2:
                    return
                if self._buf[:2] != b"\r\n":
                    raise BadResponse("bad response: bad chunked encoding")
                del self._buf[:2]
                self._chunk_state = "size"
            else:
                end = self._buf.find(b"\r\n")
                if end < 0:
                    if len(self._buf) > MAX_HEAD_BYTES:
                        raise BadResponse("bad response: chunked trailer too large")
                    return
                del self._buf[: end + 2]
                if end == 0:
                    self._finish(reusable=not self._close)
