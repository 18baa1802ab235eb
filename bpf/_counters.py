"""Per-CPU counters of the XDP program, summed over CPUs into plain dataclasses."""

import array
import ctypes
import errno
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import config
from bpf.service import ServiceKey

__all__ = ["BackendCounters", "Counters", "GlobalCounters", "ServiceCounters", "read_counters", "read_totals"]


@dataclass(frozen=True)
class GlobalCounters:
    """``struct global_stats`` of xdplb.h, field for field (a test holds them equal)."""

    rx_packets: int = 0
    passed: int = 0
    forwarded: int = 0
    forwarded_bytes: int = 0
    flow_hits: int = 0
    flow_misses: int = 0
    flow_inserts: int = 0
    flow_evictions: int = 0
    flood_guard_skips: int = 0
    drop_no_backend: int = 0
    drop_malformed: int = 0
    drop_fragment: int = 0
    drop_vlan_push: int = 0
    drop_no_source_mac: int = 0
    icmp_too_big_forwarded: int = 0
    icmp_echo_replies: int = 0
    redirected: int = 0
    drop_no_egress: int = 0
    tunnelled: int = 0
    drop_no_route: int = 0
    drop_too_big: int = 0
    drop_no_headroom: int = 0
    icmp_too_big_sent: int = 0


@dataclass(frozen=True)
class ServiceCounters:
    """``struct service_stats``."""

    packets: int = 0
    bytes: int = 0
    new_flows: int = 0
    drop_no_backend: int = 0


@dataclass(frozen=True)
class BackendCounters:
    """``struct backend_stats``."""

    packets: int = 0
    bytes: int = 0
    new_flows: int = 0


@dataclass(frozen=True)
class Counters:
    """Every counter at one moment."""

    totals: GlobalCounters
    services: Mapping[ServiceKey, ServiceCounters]
    backends: Mapping[tuple[ServiceKey, config.IpAddress], BackendCounters]


T = TypeVar("T", GlobalCounters, ServiceCounters, BackendCounters)


def _sum_row(table: Any, index: int, cls: type[T]) -> T:
    per_cpu = table[table.Key(index)]
    return cls(**{f.name: sum(getattr(cpu, f.name) for cpu in per_cpu) for f in fields(cls)})


def read_counters(
    table: Callable[[str], Any],
    service_ids: Mapping[ServiceKey, int],
    backend_slots: Mapping[tuple[ServiceKey, config.IpAddress], int],
) -> Counters:
    """Read and sum the counter maps; ``table(name)`` gives a bcc map.

    The service and backend maps are read whole with one batch lookup each: at 10,000 backends a lookup per row
    took 0.25 s, and ran for every status and scrape.
    """
    return Counters(
        totals=_sum_row(table("global_stats"), 0, GlobalCounters),
        services=_sum_rows(table("service_stats"), service_ids, ServiceCounters),
        backends=_sum_rows(table("backend_stats"), backend_slots, BackendCounters),
    )


def read_totals(table: Callable[[str], Any]) -> GlobalCounters:
    """The global counters alone: one per-CPU row, cheap enough to read every second."""
    return _sum_row(table("global_stats"), 0, GlobalCounters)


K = TypeVar("K")


def _sum_rows(table: Any, rows: Mapping[K, int], cls: type[T]) -> Mapping[K, T]:
    if not rows:
        return {}
    width = len(fields(cls))
    try:
        # Slots and ids are handed out from the low end: reading up to the highest in use, not the whole map
        # (16,384 backend rows by default), is what keeps this in proportion to the config.
        words, cpus = _lookup_all(table, width, max(rows.values()) + 1)
    except OSError:  # a kernel without batch lookups of arrays: one row at a time
        return {key: _sum_row(table, index, cls) for key, index in rows.items()}
    stride = width * cpus
    # Column by column, summed over the CPUs in C (map over slices): a Python loop per row cost 8 us a row.
    columns: list[Sequence[int]] = []
    for field in range(width):
        per_cpu = [words[field + cpu * width :: stride] for cpu in range(cpus)]
        columns.append(per_cpu[0] if cpus == 1 else list(map(sum, zip(*per_cpu))))
    return _Rows(rows, columns, cls)


class _Rows(Mapping[K, T]):
    """Counters by key, each made when looked up: no key is hashed again to build a dict that is read once."""

    def __init__(self, rows: Mapping[K, int], columns: list[Sequence[int]], cls: type[T]) -> None:
        self._rows = rows
        self._columns = columns
        self._cls: type[T] = cls

    def __getitem__(self, key: K) -> T:
        index = self._rows[key]
        made: T = self._cls(*(column[index] for column in self._columns))
        return made

    def __iter__(self) -> Iterator[K]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


def _lookup_all(table: Any, width: int, rows: int) -> "tuple[array.array[int], int]":
    """The first ``rows`` rows of the per-CPU array ``table`` whose values are ``width`` u64 fields: the words row
    by row, CPU by CPU, and the number of CPUs. OSError if the kernel refuses the batch lookup."""
    from bcc.libbcc import lib  # Debian's python3-bpfcc: only where BPF runs

    cpus = int(table.total_cpu)
    rows = min(rows, int(table.max_entries))
    row_words = width * cpus
    words = array.array("Q", bytes(8 * row_words * rows))
    values = (ctypes.c_uint64 * len(words)).from_buffer(words)
    keys = (ctypes.c_uint32 * rows)()
    batch, count, done = ctypes.c_uint32(0), ctypes.c_uint32(0), 0
    while done < rows:
        count.value = rows - done
        result = lib.bpf_lookup_batch(
            int(table.map_fd), ctypes.byref(batch) if done else None, ctypes.byref(batch),
            ctypes.byref(keys, 4 * done), ctypes.byref(values, 8 * row_words * done), ctypes.byref(count),
        )  # fmt: skip
        error = ctypes.get_errno()
        done += count.value
        if result != 0:
            if error == errno.ENOENT:  # the end of the map
                break
            raise OSError(error, os.strerror(error))
        if count.value == 0:
            break
    if list(keys[:done]) != list(range(done)):  # an array's rows come back in key order; anything else: fall back
        raise OSError(errno.EINVAL, "batch lookup returned rows out of order")
    return words, cpus
