"""Per-CPU counters of the XDP program, summed over CPUs into plain dataclasses."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from bpf.service import IPAddress, ServiceKey

__all__ = ["BackendCounters", "Counters", "GlobalCounters", "ServiceCounters", "read_counters"]


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
    flow_entries_v4: int = 0
    flow_entries_v6: int = 0
    flood_guard_skips: int = 0
    drop_no_backend: int = 0
    drop_malformed: int = 0
    drop_fragment: int = 0
    drop_vlan_push: int = 0
    icmp_too_big_forwarded: int = 0


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
    backends: Mapping[tuple[ServiceKey, IPAddress], BackendCounters]


T = TypeVar("T", GlobalCounters, ServiceCounters, BackendCounters)


def _sum_row(table: Any, index: int, cls: type[T]) -> T:
    per_cpu = table[table.Key(index)]
    return cls(**{f.name: sum(getattr(cpu, f.name) for cpu in per_cpu) for f in fields(cls)})


def read_counters(
    table: Callable[[str], Any],
    service_ids: Mapping[ServiceKey, int],
    backend_slots: Mapping[tuple[ServiceKey, IPAddress], int],
) -> Counters:
    """Read and sum the counter maps; ``table(name)`` gives a bcc map."""
    services, backends = table("service_stats"), table("backend_stats")
    return Counters(
        totals=_sum_row(table("global_stats"), 0, GlobalCounters),
        services={key: _sum_row(services, index, ServiceCounters) for key, index in service_ids.items()},
        backends={key: _sum_row(backends, slot, BackendCounters) for key, slot in backend_slots.items()},
    )
