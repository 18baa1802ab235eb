"""The references pinned to known vectors before anything is checked against them."""

import ipaddress

from tests.reference import flowhash, maglev


def test_murmur3_known_vectors() -> None:
    # Published MurmurHash3_x86_32 values.
    assert flowhash.murmur3_32(b"", 0) == 0
    assert flowhash.murmur3_32(b"", 1) == 0x514E28B7
    assert flowhash.murmur3_32(b"\x00\x00\x00\x00", 0) == 0x2362F9DE
    assert flowhash.murmur3_32(b"The quick brown fox jumps over the lazy dog", 0) == 0x2E4FF723
    assert flowhash.murmur3_32(b"Hello, world!", 1234) == 0xFAF6CDB3


def test_flow_key_layout() -> None:
    key = flowhash.flow_key(ipaddress.ip_address("198.18.0.2"), ipaddress.ip_address("192.0.2.100"), 1234, 80, 6)
    assert key.hex() == "c6120002c000026404d2005006000000"


def test_maglev_small_table_by_hand() -> None:
    # size 7: a -> offset/skip from blake2b; the permutations are listed so a failure can be checked by hand.
    a, b = maglev.permutation("a", 7), maglev.permutation("b", 7)
    assert sorted(a) == sorted(b) == list(range(7))
    table = maglev.build([("a", 1), ("b", 1)], 7)
    # Rounds alternate a, b, a, b ...: each takes its first free preferred slot.
    expected: list[int | None] = [None] * 7
    ia = ib = 0
    for turn in range(7):
        perm, index = (a, 0) if turn % 2 == 0 else (b, 1)
        j = ia if index == 0 else ib
        while expected[perm[j]] is not None:
            j += 1
        expected[perm[j]] = index
        if index == 0:
            ia = j + 1
        else:
            ib = j + 1
    assert table == expected
    assert sorted(table.count(i) for i in (0, 1)) == [3, 4]


def test_tunnel_headers_read_back_as_scapy_builds_them() -> None:
    """The outer headers, pinned to scapy's own reading and building of the same fields."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6

    from tests.reference import tunnel

    inner4 = bytes(IP(src="198.18.0.2", dst="192.0.2.100", tos=0x28) / TCP(sport=40000, dport=80))
    inner6 = bytes(IPv6(src="2001:db8::2", dst="2001:db8:100::100", tc=0xB8) / TCP(sport=40000, dport=80))
    src4, dst4 = ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("198.18.5.20")
    src6, dst6 = ipaddress.ip_address("2001:db8::1"), ipaddress.ip_address("2001:db8:5::20")
    flow_hash = 0x12345678

    ipip = IP(tunnel.outer_headers(inner4, src4, dst4, gue_port=None, flow_hash=flow_hash) + inner4)
    assert bytes(ipip) == bytes(
        IP(src=str(src4), dst=str(dst4), tos=0x28, id=0, flags="DF", ttl=64, proto=4) / IP(inner4)
    )
    gue = IPv6(tunnel.outer_headers(inner4, src6, dst6, gue_port=6080, flow_hash=flow_hash) + inner4)
    assert (gue.nh, gue.hlim, gue.fl, gue.tc, gue.plen) == (17, 64, 0x45678, 0x28, 8 + len(inner4))
    assert (gue[UDP].sport, gue[UDP].dport, gue[UDP].chksum) == (0xC000 | 0x1678, 6080, 0)
    assert bytes(gue[UDP].payload) == inner4
    six_in_four = IP(tunnel.outer_headers(inner6, src4, dst4, gue_port=None, flow_hash=flow_hash) + inner6)
    assert (six_in_four.proto, six_in_four.tos, six_in_four.len) == (41, 0xB8, 20 + len(inner6))
    six_in_six = IPv6(tunnel.outer_headers(inner6, src6, dst6, gue_port=None, flow_hash=flow_hash) + inner6)
    assert (six_in_six.nh, six_in_six.tc, bytes(six_in_six.payload)) == (41, 0xB8, inner6)
