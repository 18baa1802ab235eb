"""Weighted Maglev lookup tables (Eisenbud et al., NSDI 2016), built in Python and indexed by the XDP program.

Each backend walks its own permutation of the table's slots, claiming the next free one; a backend of weight w
takes w turns per round, so slot counts follow the weights and equal weights differ by at most one slot. A
backend's permutation depends only on its name (its address) and the table size, so every node builds the same
table from the same backends, and removing a backend moves little more than that backend's slots.

>>> table = maglev_table([("198.18.0.11", 1), ("198.18.0.12", 1)], 7)
>>> sorted(table.count(i) for i in (0, 1))
[3, 4]
"""

from __future__ import annotations

import hashlib
import math
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from types import ModuleType

import config

_maglev_fill: ModuleType | None
try:
    from bpf import _maglev_fill
except ImportError:  # not built (no compiler at install): the same tables, from the Python loop
    _maglev_fill = None

__all__ = ["DEFAULT_TABLE_SIZE", "MaglevCache", "TableKey", "build", "maglev_table", "permutation_seed", "place"]

DEFAULT_TABLE_SIZE = 16381
"""Prime; 64 KiB per table version. Larger tables spread many backends more evenly (M >> 100 N keeps it within 1%)."""


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
    return _table(backends, size).tolist()


def _table(backends: Sequence[tuple[str, int]], size: int) -> array[int]:
    if not config.is_prime(size):
        raise ValueError(f"Maglev table size {size} is not prime")
    if len({name for name, _ in backends}) != len(backends):
        raise ValueError("backend names must be unique")
    if any(weight < 0 for _, weight in backends):
        raise ValueError("weights must not be negative")
    if len(backends) > 65536:
        raise ValueError("at most 65,536 backends in a table")
    live = [(index, weight) for index, (_, weight) in enumerate(backends) if weight > 0]
    if not live:
        return array("H")
    divisor = math.gcd(*(weight for _, weight in live))
    # Per backend: [index, turns per round, next slot of its permutation, skip]. Walking the permutation by adding
    # ``skip`` (mod size) is the same as computing ``(offset + j * skip) % size``, at half the cost.
    walkers = [[index, weight // divisor, *permutation_seed(backends[index][0], size)] for index, weight in live]
    if _maglev_fill is not None:
        table = array("H")
        table.frombytes(_maglev_fill.fill(array("q", [value for walker in walkers for value in walker]), size))
        return table
    return array("H", _fill(walkers, size))


def place(table: array[int], slots: Sequence[int]) -> tuple[array[int], list[int]]:
    """``table`` (indexes into a service's candidates) as the data plane stores it: each entry the slot of its
    candidate, ``slots[index]``, 8 bytes apart (``array("Q")``, as the kernel's array map shows it through mmap),
    and how many entries each candidate holds.

    >>> placed, counts = place(array("H", [1, 0, 1]), [7, 9])
    >>> list(placed), counts
    ([9, 7, 9], [1, 2])
    """
    if _maglev_fill is not None and table.typecode == "H":
        data, counts = _maglev_fill.place(table, array("I", slots))
        placed = array("Q")
        placed.frombytes(data)
        return placed, counts
    counts = [0] * len(slots)
    for index in table:
        counts[index] += 1
    return array("Q", map(slots.__getitem__, table)), counts


def _fill(walkers: list[list[int]], size: int) -> list[int]:
    """The reference loop (``_maglev_fill.c`` does the same)."""
    entry = [-1] * size
    filled = 0
    while True:
        for walker in walkers:
            index, weight, slot, skip = walker
            for _ in range(weight):
                while entry[slot] >= 0:
                    slot += skip
                    if slot >= size:
                        slot -= size
                entry[slot] = index
                slot += skip
                if slot >= size:
                    slot -= size
                filled += 1
                if filled == size:
                    return entry
            walker[2] = slot


TableKey = tuple[tuple[tuple[str, int], ...], int]  # (backends with weights, size)


class MaglevCache:
    """Tables by their inputs (backends with weights, size), so services with the same backends share one build.

    ``table()`` builds what is missing in the calling thread; a caller with an event loop builds ahead with
    ``missing()`` and ``add()`` (in a process pool, for instance). Holds at most ``capacity`` tables, least
    recently used first out, as compact arrays (2 bytes an entry).
    """

    def __init__(self, capacity: int = 256) -> None:
        self._tables: OrderedDict[TableKey, array[int]] = OrderedDict()
        self.capacity = capacity
        self.builds = 0

    def key(self, backends: Sequence[tuple[str, int]], size: int) -> TableKey:
        """The cache key of a table."""
        return tuple(backends), size

    def missing(self, wanted: Iterable[TableKey]) -> list[TableKey]:
        """The keys of ``wanted`` not built yet, each once."""
        return list(dict.fromkeys(key for key in wanted if key not in self._tables))

    def add(self, key: TableKey, table: Sequence[int]) -> None:
        """Keep a table built elsewhere."""
        self._tables[key] = table if isinstance(table, array) else array("H", table)
        self._tables.move_to_end(key)
        while len(self._tables) > self.capacity:
            self._tables.popitem(last=False)

    def resize(self, capacity: int) -> None:
        """Hold at most ``capacity`` tables from now on (the least recently used go first)."""
        self.capacity = capacity
        while len(self._tables) > capacity:
            self._tables.popitem(last=False)

    def table(self, backends: Sequence[tuple[str, int]], size: int) -> array[int]:
        """The table of ``backends`` (name, weight) at ``size``: cached, or built now."""
        key = self.key(backends, size)
        table = self._tables.get(key)
        if table is None:
            table = build(key)
            self.add(key, table)
        else:
            self._tables.move_to_end(key)
        return table


def build(key: TableKey) -> array[int]:
    """Build the table of a cache key (a plain function of its argument: the reconciler runs it in a thread)."""
    backends, size = key
    return _table(backends, size)
