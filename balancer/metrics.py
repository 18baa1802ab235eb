"""Prometheus metrics: the snapshot read on every scrape, plus the few event-driven series the core feeds.

``Metrics`` owns a private ``CollectorRegistry`` (nothing lands in the process-global one) holding

- a collector that calls ``controller.snapshot()`` on each scrape and turns it into gauges and counters (no
  background loop; the snapshot is only read, never changed), and
- the series that exist only as events: ``xdplb_healthcheck_duration_seconds`` (a histogram per service and check
  type), ``xdplb_healthcheck_failures_total`` (per backend and check) from ``observe_check``,
  ``xdplb_backend_state_transitions_total`` from ``health_transition``; and ``xdplb_build_info``.

Nothing is a histogram per backend: a backend costs a fixed, small number of series (``README-api.md`` gives the
count, which ``tests/api/test_metrics_scale.py`` checks on a rendered exposition).

Names follow Prometheus conventions: ``xdplb_`` prefix, base units, ``_total`` on counters. Labels are bounded by the
configuration: ``service``, ``vip``, ``port``, ``proto``, ``backend`` (its address), ``peer``, ``reason``,
``state``; never a client address. Samples come out in a stable order (sorted label values), so the exposition is
byte-for-byte reproducible, which ``tests/api/golden/metrics.txt`` relies on. A scrape renders, for example::

    xdplb_backend_up{backend="198.18.0.11",port="80",proto="tcp",service="web",vip="192.0.2.100"} 1.0
    xdplb_dropped_packets_total{reason="no_backend"} 4.0
    xdplb_vip_announced{vip="192.0.2.100"} 1.0
"""

import asyncio
import bisect
import contextvars
import dataclasses
import functools
import itertools
import logging
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, exposition, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

import config
from balancer import loop_probe, snapshot_cache, status
from balancer import version as build

__all__ = ["CHECK_BUCKETS", "LAG_BUCKETS", "Metrics"]

log = logging.getLogger(__name__)

CHECK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds: health checks on a LAN take well under a millisecond to a timeout of a few seconds."""
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Seconds a check run starts after it was due: the issue's target is a p99 under 50 ms."""

_SERVICE_LABELS = ("service", "vip", "port", "proto")
_BACKEND_LABELS = (*_SERVICE_LABELS, "backend")
_ADMIN_STATES = tuple(state.value for state in config.AdminState)
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
    "flood_guard_skips": ("xdplb_flood_guard_skips", {}),
}
_TOTALS_HELP = {
    "xdplb_received_packets": "Packets the XDP program saw.",
    "xdplb_packets": "Packets by verdict: passed to the kernel stack or forwarded to a backend.",
    "xdplb_forwarded_bytes": "Bytes forwarded to backends.",
    "xdplb_flow_table_lookups": "Flow-table lookups by result.",
    "xdplb_flow_table_inserts": "New flows remembered in the flow table.",
    "xdplb_flood_guard_skips": "New flows forwarded without being remembered (over the new-flow rate limit).",
    "xdplb_dropped_packets": "Packets dropped by the XDP program, by reason.",
    "xdplb_dataplane_events": "Other data-plane counters, by name.",
}


def _service_labels(service: status.ServiceReport) -> list[str]:
    return [service.name, service.vip, str(service.port), service.protocol]


def _sorted_services(snapshot: status.Snapshot) -> list[status.ServiceReport]:
    return sorted(snapshot.services, key=lambda s: (s.name, s.vip, s.port, s.protocol))


class _SnapshotCollector(Collector):
    """Reads one snapshot per scrape and yields every family derived from it."""

    def __init__(self, controller: status.Controller) -> None:
        self._controller = controller

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        frame = _FRAME.get()
        snapshot = frame.snapshot if frame is not None else _read_snapshot(self._controller)
        if snapshot is None:
            return
        yield from self._daemon(snapshot)
        yield from self._services(snapshot)
        yield from self._backends(snapshot)
        yield from self._dataplane(snapshot)
        yield from self._routing(snapshot)

    def _daemon(self, snapshot: status.Snapshot) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        ready = GaugeMetricFamily("xdplb_ready", "1 once the data plane is attached and backend health is known.")
        ready.add_metric([], 1.0 if snapshot.ready else 0.0)
        yield ready
        started = GaugeMetricFamily("xdplb_start_time_seconds", "When the daemon started, in seconds since the epoch.")
        started.add_metric([], snapshot.started_at)
        yield started
        config_info = GaugeMetricFamily("xdplb_config_info", "The configuration in force (digest of its content).",
                                        labels=["digest"])
        config_info.add_metric([snapshot.config_digest], 1.0)
        yield config_info
        reloads = CounterMetricFamily("xdplb_config_reloads", "Configuration reloads by result.", labels=["result"])
        for result in sorted({"failure", "success", *snapshot.reloads}):
            reloads.add_metric([result], float(snapshot.reloads.get(result, 0)))
        yield reloads
        successful = GaugeMetricFamily("xdplb_config_last_reload_successful",
                                       "1 unless the last reload failed (the previous config then stays in force).")
        successful.add_metric([], 0.0 if snapshot.last_reload_error else 1.0)
        yield successful
        if snapshot.last_reload_success is not None:
            last = GaugeMetricFamily("xdplb_config_last_reload_success_timestamp_seconds",
                                     "When a configuration was last applied, in seconds since the epoch.")
            last.add_metric([], snapshot.last_reload_success)
            yield last
        attached = GaugeMetricFamily("xdplb_xdp_attached", "Interfaces the XDP program is attached to, by mode.",
                                     labels=["interface", "mode"])
        for interface, mode in sorted(snapshot.interfaces.items()):
            attached.add_metric([interface, mode], 1.0)
        yield attached

    def _services(self, snapshot: status.Snapshot) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        labels = list(_SERVICE_LABELS)
        up = GaugeMetricFamily("xdplb_service_up", "1 when at least `need` backends take new flows.", labels=labels)
        healthy = GaugeMetricFamily("xdplb_service_healthy_backends", "Backends taking new flows.", labels=labels)
        need = GaugeMetricFamily("xdplb_service_needed_backends", "Healthy backends needed to announce the VIP.",
                                 labels=labels)
        configured = GaugeMetricFamily("xdplb_service_backends", "Backends configured.", labels=labels)
        table = GaugeMetricFamily("xdplb_service_maglev_table_entries",
                                  "Maglev lookup-table entries in use (0 when no backend takes new flows).",
                                  labels=labels)
        packets = CounterMetricFamily("xdplb_service_packets", "Packets forwarded for the service.", labels=labels)
        octets = CounterMetricFamily("xdplb_service_bytes", "Bytes forwarded for the service.", labels=labels)
        flows = CounterMetricFamily("xdplb_service_new_flows", "New flows hashed to a backend.", labels=labels)
        drops = CounterMetricFamily("xdplb_service_dropped_packets", "Packets of the service dropped, by reason.",
                                    labels=[*labels, "reason"])
        for service in _sorted_services(snapshot):
            values = _service_labels(service)
            up.add_metric(values, 1.0 if service.up else 0.0)
            healthy.add_metric(values, float(service.healthy))
            need.add_metric(values, float(service.need))
            configured.add_metric(values, float(len(service.backends)))
            table.add_metric(values, float(service.table_size))
            packets.add_metric(values, float(service.packets))
            octets.add_metric(values, float(service.bytes))
            flows.add_metric(values, float(service.new_flows))
            drops.add_metric([*values, "no_backend"], float(service.drop_no_backend))
        yield from (up, healthy, need, configured, table, packets, octets, flows, drops)

    def _backends(self, snapshot: status.Snapshot) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        labels = list(_BACKEND_LABELS)
        up = GaugeMetricFamily("xdplb_backend_up", "1 when the backend's health checks pass.", labels=labels)
        health = GaugeMetricFamily("xdplb_backend_health", "Health state, one series per state (1 for the current).",
                                   labels=[*labels, "state"])
        admin = GaugeMetricFamily("xdplb_backend_admin_state", "Effective admin state, one series per state.",
                                  labels=[*labels, "state"])
        active = GaugeMetricFamily("xdplb_backend_active", "1 when the backend takes new flows in the data plane.",
                                   labels=labels)
        weight = GaugeMetricFamily("xdplb_backend_weight", "Configured weight.", labels=labels)
        slots = GaugeMetricFamily("xdplb_backend_maglev_table_entries", "Maglev lookup-table entries it holds.",
                                  labels=labels)
        since = GaugeMetricFamily("xdplb_backend_last_change_timestamp_seconds",
                                  "When its health last changed, in seconds since the epoch.", labels=labels)
        packets = CounterMetricFamily("xdplb_backend_packets", "Packets forwarded to the backend.", labels=labels)
        octets = CounterMetricFamily("xdplb_backend_bytes", "Bytes forwarded to the backend.", labels=labels)
        flows = CounterMetricFamily("xdplb_backend_new_flows", "New flows hashed to the backend.", labels=labels)
        for service in _sorted_services(snapshot):
            for backend in sorted(service.backends, key=lambda b: b.address):
                values = [*_service_labels(service), backend.address]
                up.add_metric(values, 1.0 if backend.health == "up" else 0.0)
                for state in sorted({*_HEALTH_STATES, backend.health}):
                    health.add_metric([*values, state], 1.0 if backend.health == state else 0.0)
                for state in sorted({*_ADMIN_STATES, backend.admin}):
                    admin.add_metric([*values, state], 1.0 if backend.admin == state else 0.0)
                active.add_metric(values, 1.0 if backend.dataplane == "active" else 0.0)
                weight.add_metric(values, float(backend.weight))
                slots.add_metric(values, float(backend.table_entries))
                since.add_metric(values, backend.since)
                packets.add_metric(values, float(backend.packets))
                octets.add_metric(values, float(backend.bytes))
                flows.add_metric(values, float(backend.new_flows))
        yield from (up, health, admin, active, weight, slots, since, packets, octets, flows)

    def _dataplane(self, snapshot: status.Snapshot) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        families: dict[str, CounterMetricFamily] = {}

        def add(name: str, labels: dict[str, str], value: int) -> None:
            if name not in families:
                families[name] = CounterMetricFamily(name, _TOTALS_HELP[name], labels=list(labels))
            families[name].add_metric(list(labels.values()), float(value))

        families["xdplb_dropped_packets"] = CounterMetricFamily(
            "xdplb_dropped_packets", _TOTALS_HELP["xdplb_dropped_packets"], labels=["reason"])
        for key, value in sorted(snapshot.totals.items()):
            if key.startswith("flow_entries_"):
                continue  # occupancy, not a count of events: xdplb_flow_table_entries below
            if key in _TOTALS:
                add(*_TOTALS[key], value)
            elif key.startswith("drop_"):
                add("xdplb_dropped_packets", {"reason": key.removeprefix("drop_")}, value)
            else:
                add("xdplb_dataplane_events", {"counter": key}, value)
        yield from (families[name] for name in sorted(families))
        entries = GaugeMetricFamily("xdplb_flow_table_entries", "Flows remembered in the flow table, by family.",
                                    labels=["family"])
        for family_name, count in sorted(snapshot.flow_table_entries.items()):
            entries.add_metric([family_name], float(count))
        yield entries
        size = GaugeMetricFamily("xdplb_flow_table_size", "Capacity of the flow table (entries).")
        size.add_metric([], float(snapshot.flow_table_size))
        yield size

    def _routing(self, snapshot: status.Snapshot) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        announced = GaugeMetricFamily("xdplb_vip_announced", "1 while the VIP's route is announced over BGP.",
                                      labels=["vip"])
        for vip in sorted(snapshot.vips, key=lambda v: v.vip):
            announced.add_metric([vip.vip], 1.0 if vip.announced else 0.0)
        yield announced
        session = GaugeMetricFamily("xdplb_bgp_session_up", "1 while the BGP session is established.",
                                    labels=["peer"])
        routes = GaugeMetricFamily("xdplb_bgp_routes_sent", "Routes announced to the peer.", labels=["peer"])
        for peer in sorted(snapshot.peers, key=lambda p: p.address):
            session.add_metric([peer.address], 1.0 if peer.state == "established" else 0.0)
            routes.add_metric([peer.address], float(peer.routes_sent))
        yield session
        yield routes


class _Histogram:
    """Counts per bucket (not cumulative; +Inf last) and their sum: one ``observe`` is a bisect and two adds."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def copy(self) -> "_Histogram":
        copied = _Histogram(self.bounds)
        copied.counts, copied.total = list(self.counts), self.total
        return copied

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative ``(le, count)`` pairs, ``+Inf`` last, as ``HistogramMetricFamily.add_metric`` takes them."""
        cumulative = list(itertools.accumulate(self.counts))
        return [*((str(b), float(n)) for b, n in zip(self.bounds, cumulative)), ("+Inf", float(cumulative[-1]))]


@dataclasses.dataclass(frozen=True)
class _Events:
    """A copy of the event-fed series that later events do not change (taken on the loop, read in a thread)."""

    checks: dict[tuple[str, str], _Histogram]  # (service, check type) -> durations
    failures: dict[tuple[str, str, str], int]  # (service, backend address, check type) -> failed runs
    transitions: dict[tuple[str, str, str], int]  # (service, backend address, state entered) -> count
    lag: _Histogram  # how late check runs started
    stalls: loop_probe.Stalls


class _EventCollector(Collector):
    """Series fed by events: check durations per service, check failures and health transitions per backend.

    Also the scheduler's lag and the loop probe's stalls. Kept as plain counts (no ``_created`` series, stable
    order). There is no per-backend histogram: at 10,000 backends one was 340,000 series, more than everything
    else together.
    """

    def __init__(self, probe: loop_probe.LoopProbe) -> None:
        self.checks: dict[tuple[str, str], _Histogram] = {}
        # (backend key, check type) -> [failed runs]; the labels are resolved once, on the first run
        self.failures: dict[tuple[str, str], tuple[tuple[str, str, str], list[int]]] = {}
        self.transitions: dict[tuple[str, str, str], int] = {}
        self.lag = _Histogram(LAG_BUCKETS)
        self.probe = probe

    def copy(self) -> _Events:
        return _Events(
            checks={key: histogram.copy() for key, histogram in self.checks.items()},
            failures={labels: count[0] for labels, count in self.failures.values()},
            transitions=dict(self.transitions),
            lag=self.lag.copy(),
            stalls=self.probe.read(),
        )

    def collect(self) -> Iterator[HistogramMetricFamily | CounterMetricFamily | GaugeMetricFamily]:
        frame = _FRAME.get()
        events = frame.events if frame is not None else self.copy()
        checks = HistogramMetricFamily("xdplb_healthcheck_duration_seconds",
                                       "Duration of health check runs of the service's backends, connect to verdict.",
                                       labels=["service", "check"])
        for service_check, histogram in sorted(events.checks.items()):
            checks.add_metric(list(service_check), histogram.buckets(), histogram.total)
        yield checks
        failures = CounterMetricFamily("xdplb_healthcheck_failures",
                                       "Failed health check runs of a backend (0 from its first run).",
                                       labels=["service", "backend", "check"])
        for backend_check, count in sorted(events.failures.items()):
            failures.add_metric(list(backend_check), float(count))
        yield failures
        transitions = CounterMetricFamily("xdplb_backend_state_transitions",
                                          "Health state changes of a backend, by the state entered.",
                                          labels=["service", "backend", "state"])
        for key, count in sorted(events.transitions.items()):
            transitions.add_metric(list(key), float(count))
        yield transitions
        lag = HistogramMetricFamily("xdplb_healthcheck_schedule_lag_seconds",
                                    "How late health check runs started after they were due.")
        lag.add_metric([], events.lag.buckets(), events.lag.total)
        yield lag
        stalls = _Histogram(loop_probe.STALL_BUCKETS)
        stalls.counts, stalls.total = list(events.stalls.counts), events.stalls.sum
        stall = HistogramMetricFamily("xdplb_event_loop_stall_seconds",
                                      "How late the loop probe woke from each short sleep: the event loop was busy.")
        stall.add_metric([], stalls.buckets(), stalls.total)
        yield stall
        stall_max = GaugeMetricFamily("xdplb_event_loop_stall_seconds_max",
                                      "The longest event-loop stall the probe has seen since start.")
        stall_max.add_metric([], events.stalls.max)
        yield stall_max


class Metrics:
    """Every xdplb metric, in a registry of its own.

    >>> metrics = Metrics(controller, version="0.1.0")          # doctest: +SKIP
    >>> metrics.observe_check("web/198.18.0.11", "web", "http", 0.004, ok=True)  # doctest: +SKIP
    >>> metrics.observe_schedule_lag(0.0008)                    # doctest: +SKIP
    >>> metrics.loop_probe.start()                              # doctest: +SKIP
    >>> metrics.render().decode()                               # doctest: +SKIP

    ``loop_probe`` (a new, unstarted ``LoopProbe`` by default) is exported as ``xdplb_event_loop_stall_seconds``
    and ``_max``; whoever owns the loop starts it and stops it. ``snapshots`` (default: a ``SnapshotCache`` of
    ``controller`` with its 1 s interval) serves scrapes, and the API's status from the same snapshots.
    """

    def __init__(self, controller: status.Controller, *, version: str | None = None,
                 loop_probe: loop_probe.LoopProbe | None = None,
                 snapshots: snapshot_cache.SnapshotCache | None = None) -> None:
        self._controller = controller
        self.snapshots = snapshots if snapshots is not None else snapshot_cache.SnapshotCache(controller)
        self._version = version if version is not None else build.installed_version()
        self._addresses: tuple[config.XdplbConfig | None, dict[str, str]] = (None, {})
        self.loop_probe = loop_probe if loop_probe is not None else _new_probe()
        self._events = _EventCollector(self.loop_probe)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self.registry.register(self._events)
        self.registry.register(_SnapshotCollector(controller))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """``xdplb_build_info`` (the registry calls this on every scrape)."""
        build = GaugeMetricFamily("xdplb_build_info", "Version of xdplb; always 1.", labels=["version"])
        build.add_metric([self._version], 1.0)
        yield build

    def observe_check(self, backend_key: str, service: str, check_type: str, seconds: float, ok: bool) -> None:
        """Record one check run of ``backend_key`` (``ServiceConfig.backend_key``) that took ``seconds``.

        Called for every run (thousands a second at scale): two dict lookups, a bisect and two adds.
        """
        events = self._events
        histogram = events.checks.get((service, check_type))
        if histogram is None:
            histogram = events.checks[(service, check_type)] = _Histogram(CHECK_BUCKETS)
        histogram.observe(seconds)
        failures = events.failures.get((backend_key, check_type))
        if failures is None:
            labels = (service, self._address(backend_key), check_type)
            failures = events.failures[(backend_key, check_type)] = (labels, [0])
        if not ok:
            failures[1][0] += 1

    def observe_schedule_lag(self, seconds: float) -> None:
        """Record how late one check run started after it was due (``healthchecks.CheckRun.lag``): a bisect."""
        self._events.lag.observe(seconds)

    def health_transition(self, service: str, backend: str, to_state: str) -> None:
        """Count a health change of ``backend`` (its address) of ``service`` into ``to_state`` (up, down)."""
        key = (service, backend, to_state)
        self._events.transitions[key] = self._events.transitions.get(key, 0) + 1

    def render(self) -> bytes:
        """The text exposition format of a snapshot read here and now (no cache; on the caller's thread)."""
        return generate_latest(self.registry)

    async def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """``(body, content type)`` for a scrape sending ``Accept: accept`` (text format, or OpenMetrics).

        The snapshot comes from ``snapshots`` (built on the loop, at most once per interval, shared with the status
        API); the event counts are copied on the loop; the encoding, which grows with the number of series, runs in
        a worker thread so health checks keep their timing, once per snapshot and format: scrapes within the same
        interval get the same body (with the events as they were at the first).
        """
        encoder, content_type = exposition.choose_encoder(accept)
        try:
            taken = await self.snapshots.get()
        except Exception:  # a scrape must not take the API down; the gap in the series is the signal
            log.exception("event=metrics_snapshot_failed")
            return await asyncio.to_thread(self._encode, encoder, _Frame(None, self._events.copy())), content_type

        def prepare() -> Callable[[], bytes]:
            return functools.partial(self._encode, encoder, _Frame(taken.snapshot, self._events.copy()))

        return await taken.rendered(f"metrics {content_type}", prepare), content_type

    def _encode(self, encoder: Callable[[CollectorRegistry], bytes], frame: "_Frame") -> bytes:
        """Encode the registry as ``frame`` has it (in a worker thread: the frame is set in this thread's context)."""
        token = _FRAME.set(frame)
        try:
            return encoder(self.registry)
        finally:
            _FRAME.reset(token)

    def _address(self, backend_key: str) -> str:
        """The address of a backend key, looked up in the running config (the key itself if not found)."""
        running = self._controller.running_config
        if self._addresses[0] is not running:
            self._addresses = (running, {svc.backend_key(b): str(b.address) for svc, b in running.backends()})
        return self._addresses[1].get(backend_key, backend_key)


def _new_probe() -> loop_probe.LoopProbe:
    return loop_probe.LoopProbe()  # the parameter named loop_probe hides the module inside __init__


@dataclasses.dataclass(frozen=True)
class _Frame:
    """What one scrape reports, read on the event loop before encoding elsewhere."""

    snapshot: status.Snapshot | None  # None: reading it failed
    events: _Events


_FRAME: contextvars.ContextVar[_Frame | None] = contextvars.ContextVar("xdplb_metrics_frame", default=None)


def _read_snapshot(controller: status.Controller) -> status.Snapshot | None:
    try:
        return controller.snapshot()
    except Exception:  # a scrape must not take the API down; the gap in the series is the signal
        log.exception("event=metrics_snapshot_failed")
        return None

