"""Plain-Python reference of weighted Maglev: obvious and slow on purpose.

Each backend has a permutation of the table's slots (offset and skip from blake2b of its name); in each round
every backend, in order, takes as many turns as its weight (divided by the weights' gcd), claiming the first slot
of its permutation not yet taken, until every slot is taken.
"""

import hashlib
import math


def permutation(name: str, size: int) -> list[int]:
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    offset = int.from_bytes(digest[:4], "little") % size
    skip = int.from_bytes(digest[4:], "little") % (size - 1) + 1
    return [(offset + j * skip) % size for j in range(size)]


def build(backends: list[tuple[str, int]], size: int) -> list[int]:
    """Entries are indexes into ``backends``; [] when no backend has weight."""
    weighted = [(i, w) for i, (_, w) in enumerate(backends) if w > 0]
    if not weighted:
        return []
    g = 0
    for _, w in weighted:
        g = math.gcd(g, w)
    perms = {i: permutation(backends[i][0], size) for i, _ in weighted}
    next_choice = {i: 0 for i, _ in weighted}
    table: list[int | None] = [None] * size
    taken = 0
    while taken < size:
        for i, w in weighted:
            for _ in range(w // g):
                if taken == size:
                    break
                while table[perms[i][next_choice[i]]] is not None:
                    next_choice[i] += 1
                table[perms[i][next_choice[i]]] = i
                next_choice[i] += 1
                taken += 1
    return [entry for entry in table if entry is not None]
