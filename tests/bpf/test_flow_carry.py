"""Carrying a flow table over to a new run (``bpf._flow_carry``), on plain buffers laid out as the maps are: the
hash is the XDP program's (pinned to the plain-Python reference), and only consistent entries move, each into the
set the new seed gives it, with its slot translated and a check word the new program accepts."""

import ipaddress
import struct

from bpf import _flow_carry
from tests.reference import flowhash

OLD_SEED, NEW_SEED = 0x1234567, 0x89ABCDE
OLD_SETS, NEW_SETS = 16, 64
ENTRY = 32  # struct flow_entry_v4
SET = 4 * ENTRY


def _key(port: int) -> bytes:
    return flowhash.flow_key(ipaddress.ip_address("198.18.0.2"), ipaddress.ip_address("192.0.2.100"), port, 80, 6)


def _check(key_hash: int, slot: int, generation: int) -> int:
    return (key_hash ^ ((slot * 0x9E3779B1) & 0xFFFFFFFF) ^ generation ^ 0x5BD1E995) & 0xFFFFFFFF


def _put(
    table: bytearray,
    key: bytes,
    seed: int,
    sets: int,
    slot: int,
    generation: int,
    seen: int,
    *,
    check: int | None = None,
) -> None:
    key_hash = flowhash.murmur3_32(key, seed)
    at = (key_hash & (sets - 1)) * SET
    while struct.unpack_from("<I", table, at + 24)[0]:
        at += ENTRY
    table[at : at + 16] = key
    struct.pack_into(
        "<IIII", table, at + 16, slot, generation, seen, _check(key_hash, slot, generation) if check is None else check
    )


def _find(table: bytearray, key: bytes) -> tuple[int, int, int, int] | None:
    key_hash = flowhash.murmur3_32(key, NEW_SEED)
    base = (key_hash & (NEW_SETS - 1)) * SET
    for way in range(4):
        at = base + way * ENTRY
        if bytes(table[at : at + 16]) == key:
            return struct.unpack_from("<IIII", table, at + 16)
    return None


def test_the_hash_is_the_reference_murmur3() -> None:
    for port in (1, 40000, 65535):
        for seed in (0, OLD_SEED, 0xFFFFFFFF):
            assert _flow_carry.flow_hash(_key(port), seed) == flowhash.murmur3_32(_key(port), seed)


def test_consistent_entries_move_to_their_new_set_with_their_new_slot() -> None:
    old, new = bytearray(OLD_SETS * SET), bytearray(NEW_SETS * SET)
    _put(old, _key(1000), OLD_SEED, OLD_SETS, slot=7, generation=3, seen=500)
    _put(old, _key(1001), OLD_SEED, OLD_SETS, slot=8, generation=1, seen=501)
    _put(old, _key(1002), OLD_SEED, OLD_SETS, slot=7, generation=3, seen=502, check=0xDEADBEEF)  # torn
    _put(old, _key(1003), OLD_SEED, OLD_SETS, slot=9, generation=1, seen=503)  # a slot the new run lacks
    _put(old, _key(1004), OLD_SEED, OLD_SETS, slot=7, generation=0, seen=504)  # never placed
    _put(old, _key(1005), OLD_SEED, OLD_SETS, slot=7, generation=2, seen=505)  # the slot's previous backend

    carried = _flow_carry.carry_flows(4, old, OLD_SETS, new, NEW_SETS, NEW_SEED, {7: (2, 5, 3), 8: (3, 1, 1)})

    assert carried == 2
    new_hash = flowhash.murmur3_32(_key(1000), NEW_SEED)
    assert _find(new, _key(1000)) == (2, 5, 500, _check(new_hash, 2, 5)), "the check word the program accepts"
    assert _find(new, _key(1001))[:3] == (3, 1, 501)  # type: ignore[index]
    assert all(_find(new, _key(port)) is None for port in (1002, 1003, 1004, 1005))


def test_a_full_set_leaves_the_rest_to_maglev() -> None:
    old, new = bytearray(OLD_SETS * SET), bytearray(NEW_SETS * SET)
    ports = [port for port in range(1, 5000) if flowhash.murmur3_32(_key(port), NEW_SEED) & (NEW_SETS - 1) == 0][
        :6
    ]  # one new set, six flows
    for port in ports:
        _put(old, _key(port), OLD_SEED, OLD_SETS, slot=7, generation=1, seen=10) if _fits(old, _key(port)) else None
    placed = sum(1 for port in ports if _was_put(old, _key(port)))
    carried = _flow_carry.carry_flows(4, old, OLD_SETS, new, NEW_SETS, NEW_SEED, {7: (2, 1, 1)})
    assert carried == min(placed, 4)


def _fits(table: bytearray, key: bytes) -> bool:
    at = (flowhash.murmur3_32(key, OLD_SEED) & (OLD_SETS - 1)) * SET
    return any(not struct.unpack_from("<I", table, at + way * ENTRY + 24)[0] for way in range(4))


def _was_put(table: bytearray, key: bytes) -> bool:
    at = (flowhash.murmur3_32(key, OLD_SEED) & (OLD_SETS - 1)) * SET
    return any(bytes(table[at + way * ENTRY : at + way * ENTRY + 16]) == key for way in range(4))
