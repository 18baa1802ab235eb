"""An incremental, bounded HTTP/1.1 response reader for the lean HTTP check, on httptools (llhttp).

It keeps only what a health check needs: the status, and the body when the check looks at it or the connection is
to be reused. httptools parses as bytes arrive and buffers nothing but a header being read, so the bounds are on
the bytes fed: a huge head, an endless trailer or a body past ``max_body`` ends the check instead of filling memory.
"""

import httptools

__all__ = ["BadResponse", "ResponseReader", "MAX_HEAD_BYTES"]

MAX_HEAD_BYTES = 65536
_CHUNK_FRAMING_BYTES = 64  # allowed per chunk for its size line and extensions, beyond the body bytes


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
        parser = httptools.HttpResponseParser(self)
        # Bare LF line ends are read, as curl and browsers read them: the check is about the service, not its CRs.
        parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
        self._parser: httptools.HttpResponseParser | None = parser
        self._in_body = False
        self._framed = False  # the body has a Content-Length or chunked framing, so EOF is not its end
        self._close = False  # the server will close the connection after this response
        self._head_bytes = 0  # fed before the final head was complete
        self._overhead = 0  # fed after it that were not body: chunk framing and trailers
        self._chunks = 0
        self._first = b""  # the first bytes, to show when they are not HTTP at all
        self.status = 0
        self.body = bytearray()
        self.done = False
        self.reusable = False
        self.truncated = False
        self._consumed = 0  # body bytes read so far, kept or not

    def feed(self, data: bytes) -> None:
        """Take more bytes; raises BadResponse with a reason when they cannot be a good response."""
        if self.done:
            return
        if self._parse(data):
            return
        # Past the body limit the check has what it may look at, and the connection is not reused. Decided after
        # the whole piece, so that a response complete within it stays reusable.
        if self._want_body and len(self.body) >= self._max_body or self._consumed > self._max_body:
            self.truncated = True
            self.done = True
            return
        if not self._in_body:
            if len(self._first) < 16:
                self._first = (self._first + data)[:16]
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                raise BadResponse(f"bad response: head larger than {MAX_HEAD_BYTES} bytes")
        else:
            self._overhead += len(data)
            if self._overhead - self._consumed > MAX_HEAD_BYTES + _CHUNK_FRAMING_BYTES * self._chunks:
                raise BadResponse("bad response: chunk framing or trailer larger than allowed")

    def _parse(self, data: bytes) -> bool:
        """Feed httptools; True when that made the reader done."""
        parser = self._parser
        if parser is None:
            return True
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # a 101: on_headers_complete has ended the read, and the rest is another protocol
        except httptools.HttpParserError as error:
            if not self.done:
                self._parser = None
                raise self._bad(error, data) from None
        if self.done:
            # The parser refers back to this reader: dropped now, not left as a cycle for the garbage collector.
            self._parser = None
        return self.done

    def _bad(self, error: httptools.HttpParserError, data: bytes) -> BadResponse:
        cause = error.__cause__ or error.__context__
        if isinstance(cause, BadResponse):  # raised by one of the callbacks below, and wrapped by httptools
            return cause
        first = (self._first + data)[:16]
        if not self._in_body and not first.startswith(b"HTTP/"[: len(first)]):
            return BadResponse(f"bad response: not HTTP: {first!r}")
        where = "body" if self._in_body else "head"
        return BadResponse(f"bad response: {str(error) or type(error).__name__} (in the {where})")

    def close(self) -> None:
        """Drop the parser, which refers back to this reader, when the read ends before the response did."""
        self._parser = None

    def feed_eof(self) -> None:
        """The peer closed its side: finish a read-until-close body or say what was missing."""
        if self.done:
            return
        if not self._in_body:
            raise BadResponse("connection closed before a complete response")
        if not self._framed:
            self.done = True
            self.truncated = self._want_body and self._consumed > len(self.body)
            return
        if self._want_body:
            # The body the check looks at is incomplete, but what arrived is all there will be.
            self.truncated = True
            self.done = True
            return
        raise BadResponse("connection closed in the middle of the body")

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_body:
            return  # a trailer
        name = name.lower()
        if name == b"content-length" or (name == b"transfer-encoding" and b"chunked" in value.lower()):
            self._framed = True

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None  # called back from within its feed_data
        status = parser.get_status_code()
        if not 100 <= status <= 599:
            raise BadResponse(f"bad response: status {status} out of range")
        if status < 200 and status != 101:
            self._framed = False
            return  # an interim response (100 Continue); the real one follows
        self.status = status
        self._in_body = True
        self._close = not parser.should_keep_alive()
        if self._head_only or status in (204, 304) or status == 101:
            self._finish(reusable=not self._close and status != 101)
        elif not self._want_body and not self._keepalive:
            # The status is all the check looks at, and the connection is closed anyway.
            self.done = True

    def on_chunk_header(self) -> None:
        self._chunks += 1

    def on_body(self, body: bytes) -> None:
        if self.done:
            return
        room = self._max_body - len(self.body)
        if self._want_body and room > 0:
            self.body += body[:room]
        self._consumed += len(body)

    def on_message_complete(self) -> None:
        if self._in_body and not self.done:
            self._finish(reusable=not self._close)

    def _finish(self, *, reusable: bool) -> None:
        self.done = True
        self.reusable = reusable and self._keepalive
        self.truncated = self._want_body and self._consumed > len(self.body)
