"""The families a ``status.Snapshot`` becomes: daemon, services, backends, data plane, routing.

Pure functions of an immutable snapshot, so a worker thread can run them while the loop goes on. Series come out
sorted by label values, whatever the snapshot's order, so the exposition is byte-for-byte reproducible
(``tests/api/golden/metrics.txt``). A backend row costs 14 series (``README-api.md`` counts them all).
"""

from collections.abc import Iterator

import config
from balancer import link_reattach, metrics_text, status

__all__ = ["families"]

Family = metrics_text.Family

_SERVICE = metrics_text.Labels(["service", "vip", "port", "proto"], extra="reason")
_BACKEND = metrics_text.Labels(["service", "vip", "port", "proto", "backend"], extra="state")
_ONE = {
    name: metrics_text.Labels([name])
    for name in ("digest", "result", "family", "vip", "peer", "reason", "action", "counter")
}
_ATTACHED = metrics_text.Labels(["interface", "mode"])
_REATTACH = metrics_text.Labels(["interface", "reason"])
_ADMIN_STATES = tuple(sorted(state.value for state in config.AdminState))
_HEALTH_STATES = ("down", "unknown", "up")

# Global data-plane counters (``Snapshot.totals``) with a family of their own; ``drop_*`` become
# ``xdplb_dropped_packets_total{reason}``, any other ``xdplb_dataplane_events_total{counter}``.
_TOTALS: dict[str, tuple[str, dict[str, str]]] = {
    "rx_packets": ("xdplb_received_packets", {}),
    "passed": ("xdplb_packets", {"action": "passed"}),
    "forwarded": ("xdplb_packets", {"action": "forwarded"}),
    "forwarded_bytes": ("xdplb_forwarded_bytes", {}),
    "flow_hits": ("xdplb_flow_table_lookups", {"result": "hit"}),
    "flow_misses": ("xdplb_flow_table_lookups", {"result": "miss"}),
    "flow_inserts": ("xdplb_flow_table_inserts", {}),
    "flow_evictions": ("xdplb_flow_table_evictions", {}),
    "flood_guard_skips": ("xdplb_flood_guard_skips", {}),
}
_TOTALS_HELP = {
    "xdplb_received_packets": "Packets the XDP program saw.",
    "xdplb_packets": "Packets by verdict: passed to the kernel stack or forwarded to a backend.",
    "xdplb_forwarded_bytes": "Bytes forwarded to backends.",
    "xdplb_flow_table_lookups": "Flow-table lookups by result.",
    "xdplb_flow_table_inserts": "New flows remembered in the flow table.",
    "xdplb_flow_table_evictions": "New flows that took the entry of a flow seen within the last minute "
    "(the flow table is too small for the active flows).",
    "xdplb_flood_guard_skips": "New flows forwarded without being remembered (over the new-flow rate limit).",
    "xdplb_dropped_packets": "Packets dropped by the XDP program, by reason.",
    "xdplb_dataplane_events": "Other data-plane counters, by name.",
}


def families(snapshot: status.Snapshot) -> Iterator[Family]:
    """Every family derived from ``snapshot``, in exposition order; the snapshot is only read."""
    yield from _daemon(snapshot)
    yield from _services(snapshot)
    yield from _backends(snapshot)
    yield from _dataplane(snapshot)
    yield from _routing(snapshot)


def _one(name: str, value: str) -> str:
    return _ONE[name].render([value])


def _flag(on: bool) -> float:
    return 1.0 if on else 0.0


def _states(known: tuple[str, ...], current: str) -> tuple[str, ...]:
    """The sorted states to report: ``known`` (sorted already), and ``current`` if it is not one of them."""
    return known if current in known else tuple(sorted({*known, current}))


def _sorted_services(snapshot: status.Snapshot) -> list[status.ServiceReport]:
    return sorted(snapshot.services, key=lambda s: (s.name, s.vip, s.port, s.protocol))


def _daemon(snapshot: status.Snapshot) -> Iterator[Family]:
    ready = Family("xdplb_ready", "gauge", "1 once the data plane is attached and backend health is known.")
    ready.add("", "", _flag(snapshot.ready))
    yield ready
    started = Family("xdplb_start_time_seconds", "gauge", "When the daemon started, in seconds since the epoch.")
    started.add("", "", snapshot.started_at)
    yield started
    config_info = Family("xdplb_config_info", "gauge", "The configuration in force (digest of its content).")
    config_info.add("", _one("digest", snapshot.config_digest), 1.0)
    yield config_info
    reloads = Family("xdplb_config_reloads", "counter", "Configuration reloads by result.")
    for result in sorted({"failure", "success", *snapshot.reloads}):
        reloads.add("_total", _one("result", result), snapshot.reloads.get(result, 0))
    yield reloads
    failures = Family(
        "xdplb_dataplane_update_errors",
        "counter",
        "Data-plane updates that failed (logged; the service keeps its previous state and is retried).",
    )
    failures.add("_total", "", snapshot.dataplane_errors)
    yield failures
    restarts = Family(
        "xdplb_healthcheck_worker_restarts",
        "counter",
        "Health-checker processes restarted after a crash or a hang (their backends keep their state).",
    )
    restarts.add("_total", "", snapshot.checker_restarts)
    yield restarts
    successful = Family(
        "xdplb_config_last_reload_successful",
        "gauge",
        "1 unless the last reload failed (the previous config then stays in force).",
    )
    successful.add("", "", _flag(not snapshot.last_reload_error))
    yield successful
    if snapshot.last_reload_success is not None:
        last = Family(
            "xdplb_config_last_reload_success_timestamp_seconds",
            "gauge",
            "When a configuration was last applied, in seconds since the epoch.",
        )
        last.add("", "", snapshot.last_reload_success)
        yield last
    attached = Family("xdplb_xdp_attached", "gauge", "Interfaces the XDP program is attached to, by mode.")
    for interface, mode in sorted(snapshot.interfaces.items()):
        attached.add("", _ATTACHED.render([interface, mode]), 1.0)
    yield attached
    reattached = Family(
        "xdplb_xdp_reattach",
        "counter",
        "XDP attached again after the interface lost it (NIC reset, re-created, renamed, replaced).",
    )
    for interface in sorted({*snapshot.interfaces, *snapshot.xdp_reattaches}):
        counts = snapshot.xdp_reattaches.get(interface, {})
        for reason in link_reattach.REASONS:
            reattached.add("_total", _REATTACH.render([interface, reason]), counts.get(reason, 0))
    yield reattached
    if snapshot.check_paths:
        paths = Family(
            "xdplb_check_path_packets",
            "counter",
            "Packets of checks through the data path: sent (given their VIP), tunnelled, replies (given "
            "back), unknown and refused (marked, but no path or not to its backend: dropped).",
        )
        for event, count in snapshot.check_paths.items():
            paths.add("_total", _one("counter", event), count)
        yield paths


def _services(snapshot: status.Snapshot) -> Iterator[Family]:
    up = Family("xdplb_service_up", "gauge", "1 when at least `need` backends take new flows.")
    healthy = Family("xdplb_service_healthy_backends", "gauge", "Backends taking new flows.")
    need = Family("xdplb_service_needed_backends", "gauge", "Healthy backends needed to announce the VIP.")
    configured = Family("xdplb_service_backends", "gauge", "Backends configured.")
    table = Family(
        "xdplb_service_maglev_table_entries",
        "gauge",
        "Maglev lookup-table entries in use (0 when no backend takes new flows).",
    )
    packets = Family("xdplb_service_packets", "counter", "Packets forwarded for the service.")
    octets = Family("xdplb_service_bytes", "counter", "Bytes forwarded for the service.")
    flows = Family("xdplb_service_new_flows", "counter", "New flows hashed to a backend.")
    drops = Family("xdplb_service_dropped_packets", "counter", "Packets of the service dropped, by reason.")
    no_backend = metrics_text.label("reason", "no_backend")
    for service in _sorted_services(snapshot):
        pieces = _SERVICE.pieces([service.name, service.vip, str(service.port), service.protocol])
        labels = _SERVICE.join(pieces)
        up.add("", labels, _flag(service.up))
        healthy.add("", labels, service.healthy)
        need.add("", labels, service.need)
        configured.add("", labels, len(service.backends))
        table.add("", labels, service.table_size)
        packets.add("_total", labels, service.packets)
        octets.add("_total", labels, service.bytes)
        flows.add("_total", labels, service.new_flows)
        drops.add("_total", _SERVICE.join(pieces, no_backend), service.drop_no_backend)
    yield from (up, healthy, need, configured, table, packets, octets, flows, drops)


def _backends(snapshot: status.Snapshot) -> Iterator[Family]:
    up = Family("xdplb_backend_up", "gauge", "1 when the backend's health checks pass.")
    health = Family("xdplb_backend_health", "gauge", "Health state, one series per state (1 for the current).")
    admin = Family("xdplb_backend_admin_state", "gauge", "Effective admin state, one series per state.")
    active = Family("xdplb_backend_active", "gauge", "1 when the backend takes new flows in the data plane.")
    weight = Family("xdplb_backend_weight", "gauge", "Configured weight.")
    slots = Family("xdplb_backend_maglev_table_entries", "gauge", "Maglev lookup-table entries it holds.")
    since = Family(
        "xdplb_backend_last_change_timestamp_seconds",
        "gauge",
        "When its health last changed, in seconds since the epoch.",
    )
    packets = Family("xdplb_backend_packets", "counter", "Packets forwarded to the backend.")
    octets = Family("xdplb_backend_bytes", "counter", "Bytes forwarded to the backend.")
    flows = Family("xdplb_backend_new_flows", "counter", "New flows hashed to the backend.")
    states = {state: metrics_text.label("state", state) for state in (*_HEALTH_STATES, *_ADMIN_STATES)}
    for service in _sorted_services(snapshot):
        row = [service.name, service.vip, str(service.port), service.protocol, ""]
        for backend in sorted(service.backends, key=lambda b: b.address):
            row[4] = backend.address
            pieces = _BACKEND.pieces(row)
            labels = _BACKEND.join(pieces)
            up.add("", labels, _flag(backend.health == "up"))
            for state in _states(_HEALTH_STATES, backend.health):
                extra = states.get(state) or metrics_text.label("state", state)
                health.add("", _BACKEND.join(pieces, extra), _flag(backend.health == state))
            for state in _states(_ADMIN_STATES, backend.admin):
                extra = states.get(state) or metrics_text.label("state", state)
                admin.add("", _BACKEND.join(pieces, extra), _flag(backend.admin == state))
            active.add("", labels, _flag(backend.dataplane == "active"))
            weight.add("", labels, backend.weight)
            slots.add("", labels, backend.table_entries)
            since.add("", labels, backend.since)
            packets.add("_total", labels, backend.packets)
            octets.add("_total", labels, backend.bytes)
            flows.add("_total", labels, backend.new_flows)
    yield from (up, health, admin, active, weight, slots, since, packets, octets, flows)


def _dataplane(snapshot: status.Snapshot) -> Iterator[Family]:
    counters: dict[str, Family] = {
        "xdplb_dropped_packets": Family("xdplb_dropped_packets", "counter", _TOTALS_HELP["xdplb_dropped_packets"]),
    }

    def add(name: str, labels: dict[str, str], value: int) -> None:
        if name not in counters:
            counters[name] = Family(name, "counter", _TOTALS_HELP[name])
        counters[name].add("_total", _one(*next(iter(labels.items()))) if labels else "", value)  # one label at most

    for key, value in sorted(snapshot.totals.items()):
        if key in _TOTALS:
            add(*_TOTALS[key], value)
        elif key.startswith("drop_"):
            add("xdplb_dropped_packets", {"reason": key.removeprefix("drop_")}, value)
        else:
            add("xdplb_dataplane_events", {"counter": key}, value)
    yield from (counters[name] for name in sorted(counters))
    entries = Family(
        "xdplb_flow_table_entries",
        "gauge",
        "Active flows in the flow table (entries seen within the last minute), by family.",
    )
    for family_name, count in sorted(snapshot.flow_table_entries.items()):
        entries.add("", _one("family", family_name), count)
    yield entries
    size = Family("xdplb_flow_table_size", "gauge", "Capacity of the flow table (entries of each family).")
    size.add("", "", snapshot.flow_table_size)
    yield size


def _routing(snapshot: status.Snapshot) -> Iterator[Family]:
    announced = Family("xdplb_vip_announced", "gauge", "1 while the VIP's route is announced over BGP.")
    for vip in sorted(snapshot.vips, key=lambda v: v.vip):
        announced.add("", _one("vip", vip.vip), _flag(vip.announced))
    yield announced
    session = Family("xdplb_bgp_session_up", "gauge", "1 while the BGP session is established.")
    routes = Family("xdplb_bgp_routes_sent", "gauge", "Routes announced to the peer.")
    for peer in sorted(snapshot.peers, key=lambda p: p.address):
        labels = _one("peer", peer.address)
        session.add("", labels, _flag(peer.state == "established"))
        routes.add("", labels, peer.routes_sent)
    yield session
    yield routes
