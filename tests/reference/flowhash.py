"""Plain-Python reference of the XDP program's flow hash: MurmurHash3 x86 32-bit over the flow key's bytes.

The key is the C ``struct flow_key_v4``/``flow_key_v6`` as laid out in memory: source and destination address,
source and destination port (network order), protocol, three zero bytes. A sticky service hashes the two
addresses only.
"""

import ipaddress
import struct

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MASK = 0xFFFFFFFF


def rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & MASK


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3_x86_32, tail included (the XDP program only ever hashes whole words)."""
    h = seed & MASK
    whole = len(data) - len(data) % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * 0xCC9E2D51) & MASK
        k = rotl(k, 15)
        k = (k * 0x1B873593) & MASK
        h ^= k
        h = rotl(h, 13)
        h = (h * 5 + 0xE6546B64) & MASK
    tail = data[whole:]
    if tail:
        k = int.from_bytes(tail, "little")
        k = (k * 0xCC9E2D51) & MASK
        k = rotl(k, 15)
        k = (k * 0x1B873593) & MASK
        h ^= k
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & MASK
    h ^= h >> 16
    return h


def flow_key(saddr: IPAddress, daddr: IPAddress, sport: int, dport: int, proto: int) -> bytes:
    """The flow key's bytes, exactly as the C struct holds them."""
    return saddr.packed + daddr.packed + struct.pack("!HHB3x", sport, dport, proto)


def flow_hash(
    saddr: IPAddress, daddr: IPAddress, sport: int, dport: int, proto: int, *, sticky: bool = False, seed: int = 0
) -> int:
    """The hash the XDP program indexes a service's Maglev table with."""
    key = flow_key(saddr, daddr, sport, dport, proto)
    if sticky:
        key = key[: 2 * len(saddr.packed)]
    return murmur3_32(key, seed)
