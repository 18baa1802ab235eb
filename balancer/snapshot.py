"""Build the reported ``Snapshot`` from the core's parts: config, health, overrides, data plane, BGP."""

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

import bgp
import bpf
import config
from balancer import desired, status

__all__ = ["gather_snapshot"]


def _backend_report(
    service: config.ServiceConfig,
    backend: config.BackendConfig,
    health: desired.Health | None,
    overrides: Mapping[str, config.AdminState],
    programmed: bpf.BackendStatus | None,
    counters: bpf.BackendCounters | None,
) -> status.BackendReport:
    key = service.backend_key(backend)
    admin = desired.admin_state(service, backend, overrides)
    if programmed is not None:
        where = programmed.reason
    elif admin is config.AdminState.DISABLED:
        where = "removed: disabled"
    else:
        where = "removed: down" if health is not None and health.state == "down" else "removed: health unknown"
    counters = counters or bpf.BackendCounters()
    return status.BackendReport(
        key=key,
        address=backend.address_text,
        weight=backend.weight,
        admin=admin.value,
        admin_override=overrides[key].value if key in overrides else None,
        health=health.state if health is not None else "up",
        reason=health.reason if health is not None else "no checks",
        since=health.since if health is not None else 0.0,
        last_check_seconds=health.last_check_seconds if health is not None else None,
        mac=programmed.mac if programmed is not None else None,
        forwarding=service.forwarding_of(backend),
        dataplane=where,
        table_entries=programmed.table_entries if programmed is not None else 0,
        packets=counters.packets,
        bytes=counters.bytes,
        new_flows=counters.new_flows,
    )


def gather_snapshot(
    *,
    version: str,
    cfg: config.XdplbConfig,
    config_source: str,
    started_at: float,
    ready: bool,
    health: Mapping[str, desired.Health],
    overrides: Mapping[str, config.AdminState],
    plane: bpf.DataPlane,
    routes: Mapping[config.Prefix, desired.Route],
    speaker: bgp.Speaker | None,
    reloads: Mapping[str, int],
    last_reload_error: str | None,
    last_reload_success: float | None,
    dataplane_errors: int = 0,
    checker_restarts: int = 0,
    xdp_reattaches: Mapping[str, Mapping[str, int]] | None = None,
    durations: Mapping[str, float] | None = None,
    health_transitions: Mapping[str, int] | None = None,
) -> Callable[[], status.Snapshot]:
    """Copy what the core changes (the mappings: milliseconds at 10,000 backends) and return the function that
    assembles the snapshot from those copies and the kernel's counters, safe to call in a worker thread while the
    core goes on (the counters, the flow table and the per-backend part: a few hundred milliseconds at that size;
    on the loop, the counters and the flow table alone stalled it 40-100 ms under load).
    ``durations`` are the last check durations by backend key."""
    programmed = dict(plane.services)
    health = dict(health)
    overrides = dict(overrides)
    durations = dict(durations or {})
    routes = dict(routes)
    pending = speaker.pending() if speaker is not None else frozenset()
    announced = frozenset(speaker.announced) if speaker is not None else frozenset()
    peer_states = tuple(speaker.peers().values()) if speaker is not None else ()
    interfaces = dict(plane.attached)
    capacity = plane.settings.flow_table_capacity
    reloads = dict(reloads)
    transitions = dict(health_transitions or {})
    reattaches = {name: dict(reasons) for name, reasons in (xdp_reattaches or {}).items()}
    digest = cfg.digest()  # computed once per config (it is frozen), in the reload's thread

    def assemble() -> status.Snapshot:
        counters = plane.read_counters()  # kernel state, read under the plane's own lock: not the loop's to guard
        entries = plane.flow_table_entries()
        check_paths = asdict(plane.check_path_counters()) if plane.check_paths_enabled else {}
        return _assemble(
            cfg,
            counters,
            programmed,
            health,
            durations,
            overrides,
            routes,
            speaker is not None,
            pending,
            announced,
            peer_states,
        ).snapshot(
            version=version,
            config_digest=digest,
            config_source=config_source,
            started_at=started_at,
            ready=ready,
            interfaces=interfaces,
            flow_table_entries={"ipv4": entries[4], "ipv6": entries[6]},
            flow_table_size=capacity,
            reloads=reloads,
            last_reload_error=last_reload_error,
            last_reload_success=last_reload_success,
            dataplane_errors=dataplane_errors,
            checker_restarts=checker_restarts,
            xdp_reattaches=reattaches,
            check_paths=check_paths,
            health_transitions=transitions,
        )

    return assemble


def _assemble(
    cfg: config.XdplbConfig,
    counters: bpf.Counters,
    programmed: Mapping[bpf.ServiceKey, bpf.ServiceStatus],
    health: Mapping[str, desired.Health],
    durations: Mapping[str, float],
    overrides: Mapping[str, config.AdminState],
    routes: Mapping[config.Prefix, desired.Route],
    bgp_configured: bool,
    pending: frozenset[config.Prefix],
    announced: frozenset[config.Prefix],
    peer_states: tuple[bgp.PeerState, ...],
) -> "_Parts":
    services = []
    for service in cfg.services:
        for vip in service.vips:
            key = bpf.ServiceKey(vip, service.port, service.protocol)
            dp = programmed.get(key)
            by_address = {b.address: b for b in dp.backends} if dp is not None else {}
            svc_counters = counters.services.get(key) or bpf.ServiceCounters()
            backends = tuple(
                _backend_report(
                    service,
                    backend,
                    _with_duration(health, durations, service.backend_key(backend)),
                    overrides,
                    by_address.get(backend.address),
                    counters.backends.get((key, backend.address)),
                )
                for backend in service.backends
            )
            healthy = desired.healthy_count(dp)
            services.append(
                status.ServiceReport(
                    name=service.name,
                    vip=str(vip),
                    port=service.port,
                    protocol=service.protocol,
                    sticky=service.sticky,
                    need=service.need,
                    healthy=healthy,
                    up=healthy >= service.need,
                    table_size=dp.table_size if dp is not None else 0,
                    packets=svc_counters.packets,
                    bytes=svc_counters.bytes,
                    new_flows=svc_counters.new_flows,
                    drop_no_backend=svc_counters.drop_no_backend,
                    backends=backends,
                )
            )
    vips = tuple(
        status.VipReport(
            vip=str(route.prefix.network_address),
            prefix=str(route.prefix),
            announced=bgp_configured and route.prefix in announced and route.prefix not in pending,
            reason=route.reason if bgp_configured else f"{route.reason} (no BGP configured)",
            services=route.services,
        )
        for route in routes.values()
    )
    peers = tuple(
        status.PeerReport(
            address=str(peer.address),
            state=peer.state.value,
            since=peer.since.timestamp(),
            routes_sent=peer.routes_sent,
            reason=peer.reason,
        )
        for peer in peer_states
    )
    return _Parts(tuple(services), vips, peers, asdict(counters.totals))


@dataclasses.dataclass(frozen=True)
class _Parts:
    """The snapshot's parts that take work to assemble."""

    services: tuple[status.ServiceReport, ...]
    vips: tuple[status.VipReport, ...]
    peers: tuple[status.PeerReport, ...]
    totals: dict[str, int]

    def snapshot(self, **rest: Any) -> status.Snapshot:
        return status.Snapshot(services=self.services, vips=self.vips, peers=self.peers, totals=self.totals, **rest)


def _with_duration(
    health: Mapping[str, desired.Health], durations: Mapping[str, float], key: str
) -> desired.Health | None:
    found = health.get(key)
    if found is None or key not in durations:
        return found
    return dataclasses.replace(found, last_check_seconds=durations[key])
