"""Desired state, computed without I/O: what the data plane should hold and which VIPs BGP should carry.

Inputs are the configuration, each backend's health (absent: the backend runs no checks) and the run-time admin
overrides. A backend that is down or disabled leaves its service (its flows move elsewhere); a drained one stays
with weight 0 (established flows continue, no new ones). A service is up when at least ``need`` of its backends
take new flows in the data plane (healthy, enabled, weighted and with a known MAC); a VIP is announced when the
daemon is ready and every service on it is up.
"""

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping, Sequence, Set

import bpf
import config

__all__ = [
    "Health",
    "HealthTargets",
    "Route",
    "admin_state",
    "dataplane_services",
    "health_targets",
    "routes",
    "service_keys",
    "unsettled_services",
]


@dataclasses.dataclass(frozen=True)
class Health:
    """What the checks say about one backend."""

    state: str  # "up" | "down" | "unknown"
    reason: str
    since: float
    last_check_seconds: float | None = None


@dataclasses.dataclass(frozen=True)
class Route:
    """A VIP's desired route: announced or not, and why."""

    prefix: config.Prefix
    announce: bool
    attributes: config.RouteAttributes
    reason: str
    services: tuple[str, ...]


def admin_state(
    service: config.ServiceConfig, backend: config.BackendConfig, overrides: Mapping[str, config.AdminState]
) -> config.AdminState:
    """The backend's admin state: a run-time override if one is set, else the file's."""
    return overrides.get(service.backend_key(backend), backend.state)


HealthTargets = dict[str, tuple[config.ServiceConfig, config.BackendConfig, tuple[config.Check, ...]]]
"""Backends that run checks, by key: (service, backend, resolved checks)."""


def health_targets(cfg: config.XdplbConfig, overrides: Mapping[str, config.AdminState]) -> HealthTargets:
    """Backends that run checks, by key, with their resolved checks."""
    out: HealthTargets = {}
    for service, backend in cfg.backends():
        checks = cfg.resolved_checks(service, backend)
        if checks:
            out[service.backend_key(backend)] = (service, backend, checks)
    return out


def _is_up(health: Health | None) -> bool:
    return health is None or health.state == "up"  # None: no checks, healthy while enabled; "unknown" is not up


def service_keys(cfg: config.XdplbConfig) -> set[bpf.ServiceKey]:
    """Every (VIP, port, protocol) the config serves."""
    return {bpf.ServiceKey(vip, service.port, service.protocol) for service in cfg.services for vip in service.vips}


def dataplane_services(
    cfg: config.XdplbConfig,
    health: Mapping[str, Health],
    overrides: Mapping[str, config.AdminState],
    macs: Mapping[config.IpAddress, bpf.NextHop | str | None],
    *,
    services: Iterable[config.ServiceConfig] | None = None,
) -> list[tuple[str, bpf.Service]]:
    """(service name, data-plane service) per (VIP, port, protocol), with the backends that should be in it.

    ``services``: just these of ``cfg``'s (None: all). A backend's MAC and interface come from ``macs`` (absent or
    None: unresolved, so it takes no new flows; a bare MAC: on the ingress interface); its VLAN from the config,
    else from where its entry was learnt. A tunnelled backend (``forwarding`` ipip or gue) needs neither.
    """
    out = []
    for service in cfg.services if services is None else services:
        members = []
        for backend in service.backends:
            key = service.backend_key(backend)
            admin = admin_state(service, backend, overrides)
            if admin is config.AdminState.DISABLED or not _is_up(health.get(key)):
                continue
            weight = 0 if admin is config.AdminState.DRAINED else backend.weight
            forwarding = service.forwarding_of(backend)
            if forwarding != "l2":  # routed: the data plane asks the FIB, no MAC of ours
                members.append(bpf.Backend(backend.address, weight=weight, tunnel=forwarding))
                continue
            hop = macs.get(backend.address)
            if isinstance(hop, str):
                hop = bpf.NextHop(hop)
            members.append(bpf.Backend(
                backend.address, weight=weight, vlan=backend.vlan or (0 if hop is None else hop.vlan),
                mac=None if hop is None else hop.mac, ifindex=0 if hop is None else hop.ifindex,
            ))  # fmt: skip
        for vip in service.vips:
            service_key = bpf.ServiceKey(vip, service.port, service.protocol)
            out.append((service.name, bpf.Service(
                service_key, tuple(members), sticky=service.sticky, table_size=service.table_size
            )))  # fmt: skip
    return out


def healthy_count(status: bpf.ServiceStatus | None) -> int:
    """Backends taking new flows in the data plane."""
    return 0 if status is None else status.active


def unsettled_services(
    cfg: config.XdplbConfig, health: Mapping[str, Health], overrides: Mapping[str, config.AdminState]
) -> set[str]:
    """Services with an enabled, checked backend that has no verdict yet: announcing them now could flap."""
    out = set()
    for service, backend in cfg.backends():
        key = service.backend_key(backend)
        verdict = health.get(key)
        if (
            verdict is not None
            and verdict.state == "unknown"
            and admin_state(service, backend, overrides) is not config.AdminState.DISABLED
        ):
            out.add(service.name)
    return out


@dataclasses.dataclass(frozen=True)
class VipPlan:
    """What ``routes`` needs of one VIP, made once per config: its prefix, its services with their data-plane keys,
    and the attributes it is announced with (config makes services that share a VIP agree on them)."""

    prefix: config.Prefix
    services: tuple[tuple[config.ServiceConfig, bpf.ServiceKey], ...]
    attributes: config.RouteAttributes


def route_plan(cfg: config.XdplbConfig) -> tuple[VipPlan, ...]:
    """Every VIP of ``cfg``, as ``routes`` reads them (a pass with the same config can keep this)."""
    by_vip: dict[config.IpAddress, list[config.ServiceConfig]] = {}
    for service in cfg.services:
        for vip in service.vips:
            by_vip.setdefault(vip, []).append(service)
    return tuple(
        VipPlan(
            ipaddress.ip_network(vip),
            tuple((service, bpf.ServiceKey(vip, service.port, service.protocol)) for service in services),
            cfg.route_attributes(services[0]),
        )
        for vip, services in by_vip.items()
    )


def routes(
    cfg: config.XdplbConfig,
    programmed: Mapping[bpf.ServiceKey, bpf.ServiceStatus],
    *,
    ready: bool,
    why_not_ready: str,
    settling: Set[str] = frozenset(),
    plan: Sequence[VipPlan] | None = None,
) -> dict[config.Prefix, Route]:
    """Every VIP's route, announced when ``ready`` and each of its services has ``need`` healthy backends.

    Services in ``settling`` (added by a reload, backends' first verdicts still due) hold their VIPs back too.
    ``plan``: ``route_plan(cfg)``, if the caller kept it.
    """
    out = {}
    for vip in route_plan(cfg) if plan is None else plan:
        short = []
        for service, key in vip.services:
            healthy = healthy_count(programmed.get(key))
            if service.name in settling:
                short.append(f"{service.name}: waiting for the first health verdicts")
            elif healthy < service.need:
                short.append(f"{service.name}: {healthy} of {service.need} needed backends healthy")
        announce = ready and not short
        reason = "; ".join(short) if short else ("all services up" if ready else why_not_ready)
        out[vip.prefix] = Route(vip.prefix, announce, vip.attributes, reason, tuple(s.name for s, _ in vip.services))
    return out
