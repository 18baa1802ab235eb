"""The HTTP response reader and the DNS reply check on their own: splits, framing, malformed input."""

import ipaddress
import struct
from typing import Any

import dns.message
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import config
import healthchecks
from healthchecks import _check_dns, _http_response

CHUNKED = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"7;ext=1\r\nservice\r\n1\r\n \r\n8\r\nis alive\r\n0\r\nX-Trailer: 1\r\n\r\n"
)
LENGTH = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 11\r\n\r\nmaintenance"


def read(data: list[bytes], **options: object) -> _http_response.ResponseReader:
    kwargs = {"head_only": False, "want_body": True, "keepalive": True, "max_body": 1000} | options
    reader = _http_response.ResponseReader(**kwargs)  # type: ignore[arg-type]
    for piece in data:
        reader.feed(piece)
        if reader.done:
            break
    else:
        reader.feed_eof()
    return reader


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(CHUNKED)), max_size=12))
def test_chunked_response_in_any_split_reads_the_same(cuts: list[int]) -> None:
    reader = read(split(CHUNKED, cuts))
    assert (reader.status, bytes(reader.body)) == (200, b"service is alive")
    assert (reader.reusable, reader.truncated) == (True, False)


@settings(max_examples=100, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(LENGTH)), max_size=8))
def test_content_length_response_in_any_split_reads_the_same(cuts: list[int]) -> None:
    reader = read(split(LENGTH, cuts))
    assert (reader.status, bytes(reader.body), reader.reusable) == (503, b"maintenance", True)


def test_body_limit_truncates_and_forbids_reuse() -> None:
    reader = read([LENGTH], max_body=4)
    # The whole response arrived, so the connection could carry the next check, but the check saw 4 bytes.
    assert (bytes(reader.body), reader.truncated, reader.reusable) == (b"main", True, True)
    big = _http_response.ResponseReader(head_only=False, want_body=True, keepalive=True, max_body=4)
    big.feed(LENGTH[:-4])  # the head and 7 of 11 body bytes: the check stops reading, the rest stays unread
    assert (big.done, bytes(big.body), big.truncated, big.reusable) == (True, b"main", True, False)


def test_status_only_check_stops_after_the_head() -> None:
    reader = read([b"HTTP/1.1 204 No Content\r\n\r\n"], want_body=False, keepalive=False)
    assert (reader.done, reader.status, reader.reusable) == (True, 204, False)
    endless = _http_response.ResponseReader(head_only=False, want_body=False, keepalive=False, max_body=10)
    endless.feed(b"HTTP/1.1 200 OK\r\n\r\nand a body without length that never ends")
    assert endless.done and endless.status == 200


def test_connection_close_forbids_reuse_and_eof_ends_an_unframed_body() -> None:
    assert not read([b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"]).reusable
    # HTTP/1.0 closes unless the server says keep-alive.
    assert not read([b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"]).reusable
    assert read([b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"]).reusable
    reader = read([b"HTTP/1.1 200 OK\r\n\r\nuntil the end"])
    assert (bytes(reader.body), reader.reusable) == (b"until the end", False)


def test_bare_lf_line_ends_are_read() -> None:
    reader = read([b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"])
    assert (reader.done, reader.status, bytes(reader.body), reader.reusable) == (True, 200, b"ok", True)


def test_head_and_trailer_are_bounded() -> None:
    head = _http_response.ResponseReader(head_only=False, want_body=False, keepalive=False, max_body=10)
    head.feed(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(_http_response.BadResponse, match="head larger than"):
        for _ in range(_http_response.MAX_HEAD_BYTES // 1000 + 1):
            head.feed(b"X-Filler: " + b"x" * 988 + b"\r\n")
    trailer = _http_response.ResponseReader(head_only=False, want_body=True, keepalive=True, max_body=10)
    trailer.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n")
    with pytest.raises(_http_response.BadResponse, match="trailer larger than"):
        for _ in range(_http_response.MAX_HEAD_BYTES // 1000 + 1):
            trailer.feed(b"X-Trailer: " + b"x" * 987 + b"\r\n")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n", "bad response: not HTTP: b'SSH-2.0-OpenSSH_'"),
        (b"HTTP/2 200\r\n\r\n", "bad response: Expected dot (in the head)"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "bad response: Invalid character in Content-Length (in the head)",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "bad response: Duplicate Content-Length (in the head)",
        ),
        (b"HTTP/1.1 999 Unheard Of\r\n\r\n", "bad response: status 999 out of range"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "bad response: Invalid character in chunk size (in the body)",
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "connection closed in the middle of the body"),
        (b"HTTP/1.1 2", "connection closed before a complete response"),
        (b"", "connection closed before a complete response"),
    ],
)
def test_malformed_responses_have_reasons(data: bytes, reason: str) -> None:
    with pytest.raises(_http_response.BadResponse) as error:
        read([data], want_body=False)
    assert str(error.value) == reason


def _question(name: str, qtype: str, ident: int) -> dns.message.Message:
    question = dns.message.make_query(name, qtype)
    question.id = ident
    return question


def test_dns_query_and_reply_round_trip() -> None:
    question = _question("Example.ORG.", "MX", 0x1234)
    query = question.to_wire()
    assert query[:4] == b"\x12\x34\x01\x00"  # our id, recursion desired
    assert query[12:] == b"\x07Example\x03ORG\x00\x00\x0f\x00\x01"
    reply = bytearray(query)
    reply[2:4] = struct.pack("!H", 0x8183)  # a reply, NXDOMAIN
    assert _check_dns.read_reply(question, bytes(reply)) == ("NXDOMAIN", 0)
    lower = _question("example.org", "MX", 0x1234)
    assert _check_dns.read_reply(lower, bytes(reply)) == ("NXDOMAIN", 0), "names compare without case"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda r: r[:10], "reply of 10 bytes is shorter than a DNS header"),
        (lambda r: r[:2] + b"\x01\x00" + r[4:], "message is a query, not a reply"),
        (lambda r: r[:2] + b"\x90\x00" + r[4:], "reply opcode 2, expected 0"),
        (lambda r: b"\x00\x08" + r[2:], "reply id 8 does not match query id 7"),
        (lambda r: r[:15], "FormError"),
        (lambda r: r[:19], "FormError"),
        # An answer whose name points at itself: a loop a naive parser never leaves.
        (lambda r: r[:6] + b"\x00\x01" + r[8:] + b"\xc0\x15\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00", "BadPointer"),
        (lambda r: r[:12] + b"\x40" + r[13:], "BadLabelType"),
        (lambda r: r[:13] + b"x" + r[14:], "another question"),
    ],
)
def test_dns_malformed_replies(mutate: Any, reason: str) -> None:
    question = _question("a.b", "A", 7)
    query = question.to_wire()
    reply = query[:2] + b"\x81\x80" + query[4:]
    assert _check_dns.read_reply(question, reply) == ("NOERROR", 0)
    with pytest.raises(_check_dns.BadDnsReply, match=reason):
        _check_dns.read_reply(question, mutate(reply))


def test_dns_refusal_without_the_question_and_truncated_reply() -> None:
    question = _question("a.b", "A", 7)
    refused = b"\x00\x07\x81\x05" + b"\x00" * 8  # REFUSED, no question echoed
    assert _check_dns.read_reply(question, refused) == ("REFUSED", 0)
    query = question.to_wire()
    truncated = query[:2] + b"\x83\x80" + query[4:6] + b"\x00\x05" + query[8:] + b"\xc0"  # TC: cut in a record
    assert _check_dns.read_reply(question, truncated) == ("NOERROR", 0)


def test_dns_names_are_checked_when_the_check_is_set_up() -> None:
    for name in ("a..b", "x" * 64 + ".org"):
        check = config.DnsCheck.model_validate({"type": "dns", "name": name})
        with pytest.raises(healthchecks.HealthCheckConfigError, match="bad name") as error:
            _check_dns.DnsChecker(check, ipaddress.ip_address("127.0.0.1"), 53)
        assert error.value.field == "name"
