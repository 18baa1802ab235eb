"""Prometheus metrics: the snapshot read at each scrape, plus the few event-driven series the core feeds.

A scrape (``Metrics.exposition``) reports, in this order,

- ``xdplb_build_info``;
- the series that exist only as events: ``xdplb_healthcheck_duration_seconds`` (a histogram per service and check
  type) and ``xdplb_healthcheck_failures_total`` (per backend and check) from ``observe_check``,
  ``xdplb_backend_state_transitions_total`` from ``health_transition``, ``xdplb_healthcheck_schedule_lag_seconds``
  from ``observe_schedule_lag``, ``xdplb_event_loop_stall_seconds`` and ``_max`` from ``loop_probe``,
  ``xdplb_api_refused_total`` from ``api_refused``;
- the families of the snapshot (``balancer.metrics_snapshot``), from the cache the status API shares
  (``balancer.snapshot_cache``): no background loop, and the snapshot is only read.

It is encoded by ``balancer.metrics_text``, byte for byte what prometheus_client would write, about 12 times
faster; nothing lands in prometheus_client's global registry. Nothing is a histogram per backend: a backend costs a
fixed, small number of series (``README-api.md`` gives the count, which ``tests/api/test_metrics_scale.py``
checks on rendered expositions).

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
import dataclasses
import functools
import gzip as gzip_module
import itertools
import logging
from collections.abc import Callable, Collection, Iterable, Iterator

from prometheus_client import exposition

from balancer import loop_probe, metrics_snapshot, metrics_text, snapshot_cache, status
from balancer import version as build

__all__ = ["API_REFUSED_REASONS", "CHECK_BUCKETS", "LAG_BUCKETS", "Metrics"]

log = logging.getLogger(__name__)

CHECK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds: health checks on a LAN take well under a millisecond to a timeout of a few seconds."""
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Seconds a check run starts after it was due: the issue's target is a p99 under 50 ms."""
API_REFUSED_REASONS = ("bad_request", "client_limit", "connection_limit")
"""Why the API refused a connection or a request (``balancer.api_guard``, ``balancer.api_logs``)."""

Family = metrics_text.Family
_VERSION = metrics_text.Labels(["version"])
_OPENMETRICS = "application/openmetrics-text"


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

    def cumulative(self) -> list[int]:
        """Counts per ``le`` bound, ``+Inf`` last."""
        return list(itertools.accumulate(self.counts))


@dataclasses.dataclass(frozen=True)
class _Events:
    """A copy of the event-fed series that later events do not change (taken on the loop, read in a thread)."""

    checks: dict[tuple[str, str], _Histogram]  # (service, check type) -> durations
    failures: dict[tuple[str, str, str], int]  # (service, backend address, check type) -> failed runs
    transitions: dict[tuple[str, str, str], int]  # (service, backend address, state entered) -> count
    lag: _Histogram  # how late check runs started
    stalls: loop_probe.Stalls
    api_refused: dict[str, int]  # reason -> connections reset or malformed requests


class _EventStore:
    """Series fed by events: check durations per service, check failures and health transitions per backend, the
    scheduler's lag, and the loop probe's stalls.

    Plain counts, changed on the loop and copied there (``copy``) before a worker thread renders them. There is no
    per-backend histogram: at 10,000 backends one was 340,000 series, more than everything else together.
    """

    def __init__(self, probe: loop_probe.LoopProbe) -> None:
        self.checks: dict[tuple[str, str], _Histogram] = {}
        # (backend key, check type) -> [failed runs]; the labels are resolved once, on the first run
        self.failures: dict[tuple[str, str], tuple[tuple[str, str, str], list[int]]] = {}
        self.transitions: dict[tuple[str, str, str], int] = {}
        self.lag = _Histogram(LAG_BUCKETS)
        self.probe = probe
        self.api_refused = dict.fromkeys(API_REFUSED_REASONS, 0)

    def copy(self) -> _Events:
        return _Events(
            checks={key: histogram.copy() for key, histogram in self.checks.items()},
            failures={labels: count[0] for labels, count in self.failures.values()},
            transitions=dict(self.transitions),
            lag=self.lag.copy(),
            stalls=self.probe.read(),
            api_refused=dict(self.api_refused),
        )


_SERVICE_CHECK = metrics_text.Labels(["service", "check"], extra="le")
_BACKEND_CHECK = metrics_text.Labels(["service", "backend", "check"])
_TRANSITION = metrics_text.Labels(["service", "backend", "state"])
_NONE = metrics_text.Labels([], extra="le")
_REASON = metrics_text.Labels(["reason"])


def _event_families(events: _Events) -> Iterator[Family]:
    checks = Family(
        "xdplb_healthcheck_duration_seconds",
        "histogram",
        "Duration of health check runs of the service's backends, connect to verdict.",
    )
    for service_check, histogram in sorted(events.checks.items()):
        checks.add_histogram(
            _SERVICE_CHECK,
            _SERVICE_CHECK.pieces(service_check),
            histogram.bounds,
            histogram.cumulative(),
            histogram.total,
        )
    yield checks
    failures = Family(
        "xdplb_healthcheck_failures", "counter", "Failed health check runs of a backend (0 from its first run)."
    )
    for backend_check, count in sorted(events.failures.items()):
        failures.add("_total", _BACKEND_CHECK.render(backend_check), count)
    yield failures
    transitions = Family(
        "xdplb_backend_state_transitions", "counter", "Health state changes of a backend, by the state entered."
    )
    for key, count in sorted(events.transitions.items()):
        transitions.add("_total", _TRANSITION.render(key), count)
    yield transitions
    lag = Family(
        "xdplb_healthcheck_schedule_lag_seconds", "histogram", "How late health check runs started after they were due."
    )
    lag.add_histogram(_NONE, [], LAG_BUCKETS, events.lag.cumulative(), events.lag.total)
    yield lag
    stall = Family(
        "xdplb_event_loop_stall_seconds",
        "histogram",
        "How late the loop probe woke from each short sleep: the event loop was busy.",
    )
    stall.add_histogram(
        _NONE, [], loop_probe.STALL_BUCKETS, list(itertools.accumulate(events.stalls.counts)), events.stalls.sum
    )
    yield stall
    stall_max = Family(
        "xdplb_event_loop_stall_seconds_max", "gauge", "The longest event-loop stall the probe has seen since start."
    )
    stall_max.add("", "", events.stalls.max)
    yield stall_max
    refused = Family(
        "xdplb_api_refused",
        "counter",
        "API connections reset over a connection limit, and malformed requests, by reason.",
    )
    for reason, count in sorted(events.api_refused.items()):
        refused.add("_total", _REASON.render([reason]), count)
    yield refused


class Metrics:
    """Every xdplb metric: the event-fed series, and those of the snapshot at each scrape.

    >>> metrics = Metrics(controller, version="0.1.0")          # doctest: +SKIP
    >>> metrics.observe_check("web/198.18.0.11", "web", "198.18.0.11", "http", 0.004, ok=True)  # doctest: +SKIP
    >>> metrics.observe_schedule_lag(0.0008)                    # doctest: +SKIP
    >>> metrics.loop_probe.start()                              # doctest: +SKIP
    >>> metrics.render().decode()                               # doctest: +SKIP

    ``loop_probe`` (a new, unstarted ``LoopProbe`` by default) is exported as ``xdplb_event_loop_stall_seconds``
    and ``_max``; whoever owns the loop starts it and stops it. ``snapshots`` (default: a ``SnapshotCache`` of
    ``controller`` with its 1 s interval) serves scrapes, and the API's status from the same snapshots.
    """

    def __init__(
        self,
        controller: status.Controller,
        *,
        version: str | None = None,
        loop_probe: loop_probe.LoopProbe | None = None,
        snapshots: snapshot_cache.SnapshotCache | None = None,
    ) -> None:
        self._controller = controller
        self.snapshots = snapshots if snapshots is not None else snapshot_cache.SnapshotCache(controller)
        self._version = version if version is not None else build.installed_version()
        self.loop_probe = loop_probe if loop_probe is not None else _new_probe()
        self._events = _EventStore(self.loop_probe)

    def observe_check(
        self, backend_key: str, service: str, address: str, check_type: str, seconds: float, ok: bool
    ) -> None:
        """Record one check run of ``backend_key`` (``ServiceConfig.backend_key``, of ``service`` at ``address``)
        that took ``seconds``.

        Called for every run (thousands a second at scale): two dict lookups, a bisect and two adds.
        """
        events = self._events
        histogram = events.checks.get((service, check_type))
        if histogram is None:
            histogram = events.checks[(service, check_type)] = _Histogram(CHECK_BUCKETS)
        histogram.observe(seconds)
        failures = events.failures.get((backend_key, check_type))
        if failures is None:
            failures = events.failures[(backend_key, check_type)] = ((service, address, check_type), [0])
        if not ok:
            failures[1][0] += 1

    def observe_schedule_lag(self, seconds: float) -> None:
        """Record how late one check run started after it was due (``healthchecks.CheckRun.lag``): a bisect."""
        self._events.lag.observe(seconds)

    def health_transition(self, service: str, backend: str, to_state: str) -> None:
        """Count a health change of ``backend`` (its address) of ``service`` into ``to_state`` (up, down)."""
        key = (service, backend, to_state)
        self._events.transitions[key] = self._events.transitions.get(key, 0) + 1

    def api_refused(self, reason: str) -> None:
        """Count an API connection reset over a limit, or a malformed request (``API_REFUSED_REASONS``)."""
        self._events.api_refused[reason] = self._events.api_refused.get(reason, 0) + 1

    def render(self) -> bytes:
        """The text exposition format of a snapshot read here and now (no cache; on the caller's thread)."""
        return self._encode(metrics_text.text, _Frame(_read_snapshot(self._controller), self._events.copy()))

    async def exposition(self, accept: str = "", *, gzip: bool = False) -> tuple[bytes, str]:
        """``(body, content type)`` for a scrape sending ``Accept: accept`` (text format, or OpenMetrics); with
        ``gzip`` the body is gzip-compressed (level 1: 20 MB in 0.04 s, to 0.7 MB).

        The snapshot comes from ``snapshots`` (built on the loop, at most once per interval, shared with the status
        API); the event counts are copied on the loop; the encoding, which grows with the number of series, runs in
        a worker thread so health checks keep their timing, once per snapshot, format and compression: scrapes
        within the same interval get the same body (with the events as they were at the first).
        """
        content_type = exposition.choose_encoder(accept)[1]  # prometheus_client's negotiation, our encoders
        encoder = metrics_text.openmetrics if content_type.startswith(_OPENMETRICS) else metrics_text.text
        try:
            taken = await self.snapshots.get()
        except Exception:  # a scrape must not take the API down; the gap in the series is the signal
            log.exception("event=metrics_snapshot_failed")
            frame = _Frame(None, self._events.copy())
            return await asyncio.to_thread(self._encode, encoder, frame, gzip), content_type

        def prepare() -> Callable[[], bytes]:
            return functools.partial(self._encode, encoder, _Frame(taken.snapshot, self._events.copy()), gzip)

        return await taken.rendered(f"metrics {content_type} gzip={gzip}", prepare), content_type

    def _encode(self, encoder: Callable[[Iterable[Family]], bytes], frame: "_Frame", gzip: bool = False) -> bytes:
        """Every family of ``frame``, encoded (in a worker thread, but for ``render``: it only reads the frame)."""
        build = Family("xdplb_build_info", "gauge", "Version of xdplb; always 1.")
        build.add("", _VERSION.render([self._version]), 1.0)
        snapshot = metrics_snapshot.families(frame.snapshot) if frame.snapshot is not None else iter(())
        body = encoder(itertools.chain([build], _event_families(frame.events), snapshot))
        return gzip_module.compress(body, compresslevel=1, mtime=0) if gzip else body

    def forget(self, backends: Collection[tuple[str, str, str]]) -> None:
        """Drop the per-backend event series of ``backends`` (backend key, service, address), which the running
        config no longer has: their last values would otherwise stay in every scrape."""
        if not backends:
            return
        keys = {key for key, _, _ in backends}
        members = {(service, address) for _, service, address in backends}
        events = self._events
        events.failures = {key: value for key, value in events.failures.items() if key[0] not in keys}
        events.transitions = {key: n for key, n in events.transitions.items() if (key[0], key[1]) not in members}


def _new_probe() -> loop_probe.LoopProbe:
    return loop_probe.LoopProbe()  # the parameter named loop_probe hides the module inside __init__


@dataclasses.dataclass(frozen=True)
class _Frame:
    """What one scrape reports, read on the event loop before encoding elsewhere."""

    snapshot: status.Snapshot | None  # None: reading it failed
    events: _Events


def _read_snapshot(controller: status.Controller) -> status.Snapshot | None:
    try:
        return controller.snapshot()
    except Exception:  # a scrape must not take the API down; the gap in the series is the signal
        log.exception("event=metrics_snapshot_failed")
        return None
