"""Carrying an earlier run's flow table over into this run's, at a takeover: each flow keeps its backend.

The two tables differ in their index seed (chosen per load) and in slot numbers, so every entry is placed again:
its key hashed with this run's seed (MurmurHash3 over the key's words, as ``xdplb.c`` does), its slot and generation
translated, and its check word computed anew. An entry is carried only if it is consistent: seen, with a slot this
run knows, of that slot's current generation (an older one is a flow the old run already sent elsewhere), and with a
check word that puts it in the set it sits in (a torn entry almost never does). Where this
run's set is full, the entry is left out: that flow follows Maglev again, as every flow did before.
"""

import mmap
import struct
from collections.abc import Mapping

from bpf import _abi

__all__ = ["carry_flows", "flow_hash"]

_M32 = 0xFFFFFFFF
_KEY_SIZES = {4: 16, 6: 40}  # struct flow_key_v4 / _v6
_WAYS = _abi.header_defines()["FLOW_WAYS"]


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M32


def flow_hash(key: bytes, seed: int) -> int:
    """``flow_hash_of_v4``/``_v6`` of xdplb.c: MurmurHash3 (x86, 32-bit) over the key's little-endian words."""
    h = seed & _M32
    for (k,) in struct.iter_unpack("<I", key):
        k = (k * 0xCC9E2D51) & _M32
        k = _rotl(k, 15)
        k = (k * 0x1B873593) & _M32
        h ^= k
        h = _rotl(h, 13)
        h = (h * 5 + 0xE6546B64) & _M32
    h ^= len(key)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def _check(key_hash: int, slot: int, generation: int) -> int:
    """``flow_check`` of xdplb.c."""
    return (key_hash ^ ((slot * 0x9E3779B1) & _M32) ^ generation ^ 0x5BD1E995) & _M32


def carry_flows(
    family: int,
    old: mmap.mmap | bytearray,
    old_sets: int,
    new: mmap.mmap | bytearray,
    new_sets: int,
    seed: int,
    slots: Mapping[int, tuple[int, int, int]],
) -> int:
    """Place the entries of the old table (``old_sets`` sets) into the new one (``new_sets`` sets, index seed
    ``seed``); ``slots`` maps an old backend slot to (new slot, its generation, the old slot's generation).
    Returns the entries carried."""
    key_size = _KEY_SIZES[family]
    entry_size = key_size + 16  # flow (backend, generation), seen, check
    set_size = entry_size * _WAYS
    carried = 0
    for set_index in range(old_sets):
        base = set_index * set_size
        for way in range(_WAYS):
            at = base + way * entry_size
            backend, generation, seen, check = struct.unpack_from("<IIII", old, at + key_size)
            if not seen or not generation or backend not in slots or slots[backend][2] != generation:
                continue
            # The old index hash, recovered from the check word, must put the entry in the set it is in.
            if (check ^ ((backend * 0x9E3779B1) & _M32) ^ generation ^ 0x5BD1E995) & (old_sets - 1) != set_index:
                continue
            key = bytes(old[at : at + key_size])
            new_slot, new_generation, _ = slots[backend]
            key_hash = flow_hash(key, seed)
            target = (key_hash & (new_sets - 1)) * set_size
            for new_way in range(_WAYS):
                place = target + new_way * entry_size
                if struct.unpack_from("<I", new, place + key_size + 8)[0]:  # seen: taken
                    continue
                new[place : place + key_size] = key
                struct.pack_into(
                    "<IIII",
                    new,
                    place + key_size,
                    new_slot,
                    new_generation,
                    seen,
                    _check(key_hash, new_slot, new_generation),
                )
                carried += 1
                break
    return carried
