"""Just enough of the DNS wire format (RFC 1035) to ask one question and check that the answer is well formed."""

import struct

__all__ = ["BadDnsMessage", "Reply", "RCODES", "QTYPES", "build_query", "parse_reply"]

QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}

_HEADER = struct.Struct("!HHHHHH")
_QUESTION_TAIL = struct.Struct("!HH")
_RR_TAIL = struct.Struct("!HHIH")
_CLASS_IN = 1
_MAX_POINTERS = 32


class BadDnsMessage(Exception):
    """The reply is not a well-formed answer to our question; ``str()`` says what is wrong."""


class Reply:
    """The parts of a reply a check looks at."""

    __slots__ = ("ident", "rcode", "answers", "truncated")

    def __init__(self, *, ident: int, rcode: str, answers: int, truncated: bool) -> None:
        self.ident, self.rcode, self.answers, self.truncated = ident, rcode, answers, truncated


def encode_name(name: str) -> bytes:
    """``"example.org"`` → ``b"\\x07example\\x03org\\x00"``; ``"."`` is the root."""
    out = bytearray()
    for label in name.strip(".").split(".") if name.strip(".") else []:
        raw = label.encode("idna") if not label.isascii() else label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad DNS label {label!r} in {name!r}")
        out += bytes([len(raw)]) + raw
    if len(out) > 254:
        raise ValueError(f"DNS name too long: {name!r}")
    return bytes(out) + b"\x00"


def build_query(name: str, qtype: str, ident: int) -> bytes:
    """A standard query (recursion desired) for ``name``/``qtype`` in class IN."""
    return _HEADER.pack(ident, 0x0100, 1, 0, 0, 0) + encode_name(name) + _QUESTION_TAIL.pack(QTYPES[qtype], _CLASS_IN)


def parse_reply(data: bytes, *, ident: int, name: str, qtype: str) -> Reply:
    """Check that ``data`` answers our query (id, question echoed) and walk every record within bounds."""
    if len(data) < _HEADER.size:
        raise BadDnsMessage(f"reply of {len(data)} bytes is shorter than a DNS header")
    got_id, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if got_id != ident:
        raise BadDnsMessage(f"reply id {got_id} does not match query id {ident}")
    if not flags & 0x8000:
        raise BadDnsMessage("message is a query, not a reply")
    if (flags >> 11) & 0xF:
        raise BadDnsMessage(f"reply opcode {(flags >> 11) & 0xF}, expected 0 (QUERY)")
    rcode = flags & 0xF
    truncated = bool(flags & 0x0200)
    if qdcount != 1:
        if qdcount == 0 and rcode != 0:
            return Reply(ident=got_id, rcode=RCODES.get(rcode, str(rcode)), answers=0, truncated=truncated)
        raise BadDnsMessage(f"reply has {qdcount} questions, expected 1")
    offset = _HEADER.size
    qname, offset = _read_name(data, offset)
    if offset + _QUESTION_TAIL.size > len(data):
        raise BadDnsMessage("reply ends inside the question")
    got_type, got_class = _QUESTION_TAIL.unpack_from(data, offset)
    offset += _QUESTION_TAIL.size
    if qname.lower() != name.strip(".").lower() or got_type != QTYPES[qtype] or got_class != _CLASS_IN:
        raise BadDnsMessage(f"reply is for another question ({qname or '.'} type {got_type})")
    if not truncated:
        for _ in range(ancount + nscount + arcount):
            _, offset = _read_name(data, offset)
            if offset + _RR_TAIL.size > len(data):
                raise BadDnsMessage("reply ends inside a record")
            rdlength = _RR_TAIL.unpack_from(data, offset)[3]
            offset += _RR_TAIL.size + rdlength
            if offset > len(data):
                raise BadDnsMessage("record data runs past the end of the reply")
    return Reply(ident=got_id, rcode=RCODES.get(rcode, str(rcode)), answers=ancount, truncated=truncated)


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    """The dotted name at ``offset`` and the offset after it, following at most ``_MAX_POINTERS`` pointers."""
    labels: list[str] = []
    end = -1
    for _ in range(_MAX_POINTERS):
        while True:
            if offset >= len(data):
                raise BadDnsMessage("name runs past the end of the reply")
            length = data[offset]
            if length & 0xC0 == 0xC0:
                if offset + 1 >= len(data):
                    raise BadDnsMessage("name runs past the end of the reply")
                if end < 0:
                    end = offset + 2
                offset = ((length & 0x3F) << 8) | data[offset + 1]
                break
            if length & 0xC0:
                raise BadDnsMessage(f"bad label type 0x{length:02x}")
            if length == 0:
                return ".".join(labels), (end if end >= 0 else offset + 1)
            labels.append(data[offset + 1 : offset + 1 + length].decode("ascii", "replace"))
            offset += 1 + length
    raise BadDnsMessage("too many compression pointers in a name")
