"""Weighted Maglev lookup tables (Eisenbud et al., NSDI 2016), built in Python and indexed by the XDP program.

Each backend walks its own permutation of the table's slots, claiming the next free one; a backend of weight w
takes w turns per round, so slot counts follow the weights and equal weights differ by at most one slot. A
backend's permutation depends only on its name (its address) and the table size, so every node builds the same
table from the same backends, and removing a backend moves little more than that backend's slots.

>>> table = maglev_table([("198.18.0.11", 1), ("198.18.0.12", 1)], 7)
>>> sorted(table.count(i) for i in (0, 1))
[3, 4]
"""

import hashlib
import math
from collections.abc import Sequence

__all__ = ["DEFAULT_TABLE_SIZE", "is_prime", "maglev_table", "permutation_seed"]

DEFAULT_TABLE_SIZE = 16381
"""Prime; 64 KiB per table version. Larger tables spread many backends more evenly (M >> 100 N keeps it within 1%)."""


def is_prime(n: int) -> bool:
    """Whether n is prime (trial division: table sizes are small)."""
    if n < 2:
        return False
    return all(n % d for d in range(2, math.isqrt(n) + 1))


def permutation_seed(name: str, size: int) -> tuple[int, int]:
    """(offset, skip) of ``name``'s permutation: slot j of it is ``(offset + j * skip) % size``."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    h1 = int.from_bytes(digest[:4], "little")
    h2 = int.from_bytes(digest[4:], "little")
    return h1 % size, h2 % (size - 1) + 1


def maglev_table(backends: Sequence[tuple[str, int]], size: int = DEFAULT_TABLE_SIZE) -> list[int]:
    """Table of ``size`` entries, each an index into ``backends`` (name, weight); [] if no weight is positive.

    Weights are divided by their greatest common divisor first, so (100, 200) builds the same table as (1, 2).
    Names must be unique; ``size`` must be prime.
    """
    if not is_prime(size):
        raise ValueError(f"Maglev table size {size} is not prime")
    if len({name for name, _ in backends}) != len(backends):
        raise ValueError("backend names must be unique")
    if any(weight < 0 for _, weight in backends):
        raise ValueError("weights must not be negative")
    live = [(index, weight) for index, (_, weight) in enumerate(backends) if weight > 0]
    if not live:
        return []
    divisor = math.gcd(*(weight for _, weight in live))
    turns = [(index, weight // divisor, *permutation_seed(backends[index][0], size)) for index, weight in live]
    entry = [-1] * size
    position = [0] * len(turns)
    filled = 0
    while True:
        for k, (index, weight, offset, skip) in enumerate(turns):
            j = position[k]
            for _ in range(weight):
                slot = (offset + j * skip) % size
                while entry[slot] >= 0:
                    j += 1
                    slot = (offset + j * skip) % size
                entry[slot] = index
                j += 1
                filled += 1
                if filled == size:
                    return entry
            position[k] = j
