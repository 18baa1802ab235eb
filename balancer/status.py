"""What the daemon reports: one immutable snapshot of services, backends, VIPs, BGP peers and counters.

The core builds a ``Snapshot`` on demand (``Controller.snapshot()``); the JSON API, the console, ``xdplb status``
and the Prometheus collector all read it, so they always agree. They read it through one
``snapshot_cache.SnapshotCache``, which builds at most one per interval.
"""

import collections
import dataclasses
import enum
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol

import config

__all__ = [
    "BackendReport",
    "Controller",
    "Face",
    "Observer",
    "PeerReport",
    "ReloadResult",
    "ServiceReport",
    "Snapshot",
    "VipReport",
    "summary",
    "to_json",
]


@dataclasses.dataclass(frozen=True)
class BackendReport:
    """One backend of one data-plane service (a service has one per VIP)."""

    key: str  # the config's stable key, "web/198.18.0.11": admin calls name it
    address: str
    weight: int  # as configured
    admin: str  # effective admin state: enabled | drained | disabled
    admin_override: str | None  # set at run time through the API; None when the file's state applies
    health: str  # unknown | up | down
    reason: str  # why, in a few words: "status 503, expected 200-299", "connection refused", "no checks"
    since: float  # epoch seconds of the last health change
    last_check_seconds: float | None  # duration of the last check run
    mac: str | None
    forwarding: str  # l2 | ipip | gue: how its packets get there (a tunnelled one has no MAC)
    dataplane: str  # active | draining (weight 0) | no MAC (neighbour unresolved) | removed: down | removed: disabled
    table_entries: int  # Maglev slots it holds
    packets: int
    bytes: int
    new_flows: int


@dataclasses.dataclass(frozen=True)
class ServiceReport:
    """One (VIP, port, protocol) of a configured service."""

    name: str
    vip: str
    port: int
    protocol: str
    sticky: bool
    need: int
    healthy: int  # backends taking new flows in the data plane
    up: bool  # healthy >= need
    table_size: int  # Maglev entries in use; 0 when no backend takes new flows
    packets: int
    bytes: int
    new_flows: int
    drop_no_backend: int
    backends: tuple[BackendReport, ...]


@dataclasses.dataclass(frozen=True)
class VipReport:
    """A VIP's route: announced while every service on it is up and the daemon is ready."""

    vip: str
    prefix: str
    announced: bool
    reason: str  # "all services up", "web: 0 of 1 needed backends healthy", "starting: health not known yet"
    services: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class PeerReport:
    """A BGP session as ExaBGP reports it."""

    address: str
    state: str  # down | connected | established
    since: float
    routes_sent: int
    reason: str | None


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Everything the daemon reports at one moment."""

    version: str  # xdplb's
    config_digest: str
    config_source: str
    started_at: float
    ready: bool  # data plane attached and every backend's health known (or the start grace over)
    interfaces: Mapping[str, str]  # attached interface -> XDP mode
    services: tuple[ServiceReport, ...]
    vips: tuple[VipReport, ...]
    peers: tuple[PeerReport, ...]
    totals: Mapping[str, int]  # the data plane's global counters: rx_packets, passed, forwarded, drop_* ...
    flow_table_entries: Mapping[str, int]  # "ipv4"/"ipv6" -> entries in use
    flow_table_size: int
    reloads: Mapping[str, int]  # "success"/"failure" -> count
    last_reload_error: str | None
    last_reload_success: float | None = None  # epoch seconds of the last config applied (start-up counts)
    dataplane_errors: int = 0  # data-plane updates that failed (each is retried), since start
    checker_restarts: int = 0  # health-checker processes restarted after a crash or a hang, since start
    # XDP attached again after the interface lost it, since start: interface -> reason -> count
    xdp_reattaches: Mapping[str, Mapping[str, int]] = dataclasses.field(default_factory=dict)
    # what the programs of checks through the data path did (empty: none loaded): sent, tunnelled, replies, unknown,
    # refused
    check_paths: Mapping[str, int] = dataclasses.field(default_factory=dict)
    # backends' health changes since start, by the state entered (up, down): the console charts them over time
    health_transitions: Mapping[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ReloadResult:
    """What a reload did."""

    ok: bool
    config_digest: str
    message: str  # "applied: 1 service added, 2 backends changed" or the validation errors, one per line


class Controller(Protocol):
    """What the HTTP API, the console and the metrics need from the core."""

    def snapshot(self) -> Snapshot:
        """The current state: reads maps and in-memory state, no I/O beyond map reads. Called on the event loop.

        The result must share nothing that the core changes later (mappings are copies): it is rendered to JSON
        and to the exposition format in worker threads while the core goes on.
        """

    def snapshot_builder(self) -> Callable[[], Snapshot]:
        """``snapshot()`` in two halves: what the core changes is read now, on the event loop (cheap: copies and
        counter reads); the returned function assembles the snapshot from those reads, in a worker thread."""

    @property
    def running_config(self) -> config.XdplbConfig:
        """The configuration in force."""

    @property
    def ready(self) -> bool:
        """``Snapshot.ready`` without building a snapshot: ``/healthz`` asks it on every probe, in O(1)."""

    async def reload(self) -> ReloadResult:
        """Re-read the config file; apply it as a diff if valid, else keep the running one."""

    async def set_admin(self, backend_key: str, state: config.AdminState | None) -> None:
        """Override a backend's admin state at run time (None: back to the file's). KeyError if unknown."""


class Observer(Protocol):
    """What a face (the metrics) learns from the core as it happens, beyond what a snapshot shows: each check run
    and health change. Called on the event loop, thousands of times a second at scale: it must only count."""

    def observe_check(
        self, backend_key: str, service: str, address: str, check_type: str, seconds: float, ok: bool
    ) -> None:
        """One check run of ``backend_key`` (of ``service`` at ``address``) took ``seconds``."""

    def observe_schedule_lag(self, seconds: float) -> None:
        """A check run started ``seconds`` after it was due."""

    def health_transition(self, service: str, backend: str, to_state: str) -> None:
        """``backend`` (its address) of ``service`` became ``to_state`` (up, down)."""

    def forget(self, backends: Collection[tuple[str, str, str]]) -> None:
        """These backends (key, service, address) left the config."""


class Face(Protocol):
    """Something the daemon serves while it runs (the HTTP API): set up and started once the core has started,
    cleaned up when it stops, before the core's own parts."""

    async def setup(self) -> None: ...

    async def start(self) -> None: ...

    async def cleanup(self) -> None: ...


def to_json(value: Any) -> Any:
    """A snapshot (or any part of it) as plain JSON types.

    Called for a whole snapshot (in a worker thread) once per snapshot; at 10,000 backends every field is visited,
    so plain values are passed through without a call and each dataclass's field names are looked up once.
    """
    kind = type(value)
    if kind in _PLAIN:
        return value
    names = _FIELDS.get(kind)
    if names is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = _FIELDS[kind] = tuple(field.name for field in dataclasses.fields(value))
    if names is not None:
        result = {}
        for name in names:
            item = getattr(value, name)
            result[name] = item if type(item) in _PLAIN else to_json(item)
        return result
    if isinstance(value, Mapping):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [to_json(item) for item in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value


SUMMARY_NOT_SERVING_LIMIT = 100
"""How many backends ``summary`` lists by name: the rest are counted."""


def summary(snapshot: Snapshot) -> dict[str, Any]:
    """The snapshot in counts, and the backends that do not take new flows first: what an operator (or a probe)
    looks at before anything else, a few kilobytes at any size (the console's header, charts and side tables).
    Lists are cut at ``SUMMARY_NOT_SERVING_LIMIT``; peers are few."""
    health: collections.Counter[str] = collections.Counter()
    dataplane: collections.Counter[str] = collections.Counter()
    admin: collections.Counter[str] = collections.Counter()
    not_serving: list[dict[str, Any]] = []
    backends = 0
    for service in snapshot.services:
        for backend in service.backends:
            backends += 1
            health[backend.health] += 1
            dataplane[backend.dataplane] += 1
            admin[backend.admin] += 1
            if backend.dataplane != "active" and len(not_serving) < SUMMARY_NOT_SERVING_LIMIT:
                not_serving.append({
                    "key": backend.key, "service": service.name, "vip": service.vip, "port": service.port,
                    "protocol": service.protocol, "health": backend.health, "admin": backend.admin,
                    "dataplane": backend.dataplane, "reason": backend.reason, "since": backend.since,
                })  # fmt: skip
    return {
        "version": snapshot.version,
        "config_digest": snapshot.config_digest,
        "ready": snapshot.ready,
        "backends": {"total": backends, "health": dict(health), "dataplane": dict(dataplane), "admin": dict(admin)},
        "services": {"total": len(snapshot.services), "up": sum(1 for s in snapshot.services if s.up)},
        "vips": {"total": len(snapshot.vips), "announced": sum(1 for v in snapshot.vips if v.announced)},
        "peers": {
            "total": len(snapshot.peers),
            "established": sum(1 for p in snapshot.peers if p.state == "established"),
        },
        "not_serving_total": backends - dataplane["active"],
        "not_serving": not_serving,
        "vips_withdrawn": [
            {"prefix": v.prefix, "reason": v.reason, "services": list(v.services)}
            for v in snapshot.vips
            if not v.announced
        ][:SUMMARY_NOT_SERVING_LIMIT],
        "peer_sessions": [to_json(peer) for peer in snapshot.peers],
        "interfaces": dict(snapshot.interfaces),
        "started_at": snapshot.started_at,
        "totals": dict(snapshot.totals),
        "flow_table_entries": dict(snapshot.flow_table_entries),
        "flow_table_size": snapshot.flow_table_size,
        "health_transitions": dict(snapshot.health_transitions),
        "dataplane_errors": snapshot.dataplane_errors,
        "checker_restarts": snapshot.checker_restarts,
        "last_reload_error": snapshot.last_reload_error,
    }


_PLAIN = frozenset({str, int, float, bool, type(None)})
_FIELDS: dict[type, tuple[str, ...]] = {}
