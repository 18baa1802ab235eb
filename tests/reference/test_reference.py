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
    key = flowhash.flow_key(
        ipaddress.ip_address("198.18.0.2"), ipaddress.ip_address("192.0.2.100"), 1234, 80, 6
    )
    assert key.hex() == "c6120002" "c0000264" "04d2" "0050" "06" "000000"


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
