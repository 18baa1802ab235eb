"""The outer headers of a tunnelled frame, field by field, in plain Python (the C side is ``tunnel()`` in xdplb.c).

A frame for a tunnelled backend keeps its inner IP packet byte for byte. In front of it: an outer IPv4 header
(TOS of the inner packet, ID 0, DF, TTL 64, protocol 4, 41 or 17) or IPv6 header (traffic class of the inner
packet, the flow hash's low 20 bits as flow label, hop limit 64, next header 4, 41 or 17), from the node's tunnel
source to the backend; for GUE a UDP header from port 0xc000 | the hash's low 14 bits to the GUE port, checksum 0.
"""

import struct
from ipaddress import IPv4Address, IPv6Address

IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_UDP = 4, 41, 17
TTL = 64


def gue_source_port(flow_hash: int) -> int:
    """GUE's outer UDP source port: in RFC 7605's dynamic range, from the flow hash."""
    return 0xC000 | (flow_hash & 0x3FFF)


def flow_label(flow_hash: int) -> int:
    """An IPv6 outer header's flow label."""
    return flow_hash & 0xFFFFF


def _checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def outer_headers(
    inner: bytes,
    source: IPv4Address | IPv6Address,
    backend: IPv4Address | IPv6Address,
    *,
    gue_port: int | None,
    flow_hash: int,
) -> bytes:
    """The bytes put in front of the inner IP packet ``inner``: outer IP header, and a UDP header when
    ``gue_port`` is given."""
    inner_v6 = inner[0] >> 4 == 6
    tos = ((inner[0] & 0x0F) << 4 | inner[1] >> 4) if inner_v6 else inner[1]
    proto = IPPROTO_UDP if gue_port is not None else (IPPROTO_IPV6 if inner_v6 else IPPROTO_IPIP)
    udp = b""
    if gue_port is not None:
        udp = struct.pack("!HHHH", gue_source_port(flow_hash), gue_port, len(inner) + 8, 0)
    payload = len(udp) + len(inner)
    if backend.version == 4:
        header = struct.pack(
            "!BBHHHBBH4s4s", 0x45, tos, 20 + payload, 0, 0x4000, TTL, proto, 0, source.packed, backend.packed
        )
        header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    else:
        first = 6 << 28 | tos << 20 | flow_label(flow_hash)
        header = struct.pack("!IHBB16s16s", first, payload, proto, TTL, source.packed, backend.packed)
    return header + udp
