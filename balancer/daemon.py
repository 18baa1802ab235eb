"""The xdplb daemon: config in, health checks, data plane and BGP driven to match, status out.

Lifecycle: ``setup()`` loads the config and the XDP program and attaches it; ``start()`` starts the health
checks, the BGP speaker and the HTTP API; ``serve()`` runs the root tasks until the stop trigger fires;
``cleanup()`` withdraws every route, waits ``drain_seconds``, stops everything and detaches XDP. ``run()`` does
all four. Cleanup is safe after a partial setup and runs once.

A *restart stop* (``restart_stop()``, SIGUSR2) leaves XDP attached, forwarding with its last state, and stops the
rest (with ``bgp.graceful_restart``, leaving the routes with the peers). A daemon that starts where an earlier run left its program (a restart stop, or a crash) lets that program
forward until this run is ready (every first verdict in, or ``start_grace`` over) and then swaps its own in, in
one step: clients see no gap while the new run compiles and checks.
"""

import asyncio
import collections
import functools
import gc
import logging
import math
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable, Mapping, Set
from pathlib import Path
from typing import Any

import bgp
import bpf
import config
import healthchecks
from balancer import desired, link_reattach, link_watcher, loop_probe, neighbours, overrides, reconciler, reload_diff
from balancer import snapshot, status, version
from balancer import preflight

__all__ = ["Daemon", "DaemonError"]

log = logging.getLogger(__name__)

PROBE_INTERVAL = 1.0  # seconds between probes of backends whose MAC is unknown
RECONCILE_INTERVAL = 30.0  # a full pass this often, whatever the events said (it writes only differences)
RETRY_INTERVAL = 1.0  # a service whose update failed is tried again after this
DEBOUNCE = 0.02  # events this close together make one pass


class DaemonError(config.XdplbError, RuntimeError):
    """The daemon was used out of order or could not start."""


def _load_for_reload(loader: config.IncrementalLoader, path: Path) -> config.XdplbConfig:
    """``preflight.load`` at the cost of what changed in the file, and the digest computed here in the worker thread
    (it is cached), not on the loop."""
    loaded = loader.load(str(path))
    preflight.verify(loaded, source=str(path))
    loaded.digest()
    return loaded


def _sessions(bgp_config: config.BgpConfig | None) -> config.BgpConfig | None:
    """What of ``bgp`` the speaker's sessions depend on: all but the route attributes, which the passes apply."""
    return None if bgp_config is None else bgp_config.model_copy(update={"attributes": config.RouteAttributes()})


def _plane_settings(cfg: config.XdplbConfig) -> bpf.DataPlaneSettings:
    return bpf.DataPlaneSettings(
        flow_table_size=cfg.dataplane.flow_table_size,
        hash_seed=cfg.dataplane.hash_seed,
        new_flow_rate_limit=cfg.dataplane.new_flow_rate_limit,
        max_services=cfg.dataplane.max_services,
        max_backends=cfg.dataplane.max_backends,
        answer_ping=cfg.dataplane.answer_ping,
    )


_TUNNEL_FIELDS = ("tunnel_source_v4", "tunnel_source_v6", "gue_port")


def _tunnel_settings(cfg: config.XdplbConfig) -> tuple[Any, ...]:
    """``DataPlane.set_tunnel``'s arguments: written to a map, so a reload applies them."""
    return tuple(getattr(cfg.dataplane, name) for name in _TUNNEL_FIELDS)


def _tunnel_fields_of(cfg: config.XdplbConfig) -> dict[str, Any]:
    return dict(zip(_TUNNEL_FIELDS, _tunnel_settings(cfg), strict=True))


def _targets(
    targets: desired.HealthTargets,
    admin: Mapping[str, config.AdminState],
    vias: Mapping[str, healthchecks.ViaDataPlane],
) -> list[healthchecks.Target]:
    return [
        healthchecks.Target(
            key=key,
            address=backend.address,
            port=service.port,
            checks=checks,
            admin=desired.admin_state(service, backend, admin),
            via=vias.get(key),
        )
        for key, (service, backend, checks) in targets.items()
    ]


def _interface_indexes(cfg: config.XdplbConfig) -> dict[str, int] | None:
    """The ifindex of each of ``cfg``'s interfaces now; None if one is missing (the attach will say so)."""
    try:
        return {interface.name: socket.if_nametoindex(interface.name) for interface in cfg.interfaces}
    except OSError:
        return None


def _through_data_path(checks: Iterable[config.Check]) -> bool:
    return any(check.via == "dataplane" for check in checks)


def _wants_check_paths(cfg: config.XdplbConfig) -> bool:
    """Whether any backend runs a check through the data path (then the check path programs are loaded)."""
    return any(_through_data_path(cfg.resolved_checks(service, backend)) for service, backend in cfg.backends())


_CHECKS_PER_WORKER = 2000.0  # checks per second one checker process is given (it holds about 5,000 on one core)
# What a plain HTTP check on a kept-alive connection costs, as a share of one on a new connection: 5,900 against
# 14,400 checks per CPU-second (`make bench-healthchecks`, 2026-12-03). HTTPS keeps the asyncio path: full cost.
_KEPT_ALIVE_COST = 0.4


def check_workers(cfg: config.XdplbConfig, cpus: int | None = None) -> int:
    """How many checker processes ``cfg`` needs: one per 2,000 checks a second (a plain HTTP check on a kept-alive
    connection counting as 0.4 of one), at most one per CPU."""
    rate = sum(
        _check_cost(check) / check.timing.interval
        for service, backend in cfg.backends()
        for check in cfg.resolved_checks(service, backend)
    )
    return max(1, min(math.ceil(rate / _CHECKS_PER_WORKER), cpus or os.cpu_count() or 1))


def _check_cost(check: config.Check) -> float:
    kept = isinstance(check, config.HttpCheck) and check.keepalive and check.type == "http"
    return _KEPT_ALIVE_COST if kept else 1.0


_NO_VERDICT = "no verdict yet"


class Daemon:
    """Implements ``status.Controller`` for the API; one instance per run.

    ``stop`` is the stop trigger (signals set it in ``run()``); ``start_grace`` bounds the wait for every backend's
    first health verdict before VIPs may be announced. The daemon knows none of its faces: ``observers`` (the
    metrics) are told of check runs and health changes; ``face_factories`` make what it serves (the HTTP API), started
    after its core and stopped before it; ``balancer.faces.attach`` adds both, as the CLI does.
    """

    def __init__(
        self,
        config_path: Path,
        *,
        stop: asyncio.Event | None = None,
        start_grace: float = 10.0,
        drain_seconds: float = 1.0,
        speaker_factory: Callable[[config.BgpConfig], bgp.Speaker] = bgp.Speaker,
        state_file: Path | None = None,
        check_workers: int | None = None,
        plane_factory: Callable[[bpf.DataPlaneSettings], bpf.DataPlane] = bpf.DataPlane,
        neighbour_factory: Callable[..., neighbours.NeighbourWatcher] = neighbours.NeighbourWatcher,
        link_factory: Callable[[Callable[[], None]], link_watcher.LinkWatcher] | None = link_watcher.LinkWatcher,
        initial_config: config.XdplbConfig | None = None,
        loader: config.IncrementalLoader | None = None,
    ) -> None:
        self.config_path = config_path
        # Built in memory (`xdplb balance`), or read already by ``loader`` (`xdplb run`): setup() reads no file.
        self._initial_config = initial_config
        self.stop_trigger = stop or asyncio.Event()
        self.start_grace = start_grace
        self.drain_seconds = drain_seconds
        self.check_workers = check_workers  # checker processes; None: sized from the config at start
        self._speaker_factory = speaker_factory
        self._plane_factory = plane_factory
        self._neighbour_factory = neighbour_factory  # (on_change, interfaces=ifindexes): the kernel's table
        self._link_factory = link_factory  # (on_change): the kernel's links, to re-attach XDP; None: not watched
        self.state_file = state_file  # admin overrides survive restarts here; None: kept in memory only
        self.observers: list[status.Observer] = []  # told of check runs and health changes
        self._observer_failures: dict[int, int] = {}
        # made, set up and started once the core has started (they may read the running config), cleaned up first
        self.face_factories: list[Callable[[Daemon], status.Face]] = []
        self.loop_probe = loop_probe.LoopProbe()  # how late the event loop wakes up: exported by the metrics
        self._members: dict[str, tuple[str, str, tuple[str, ...]]] = {}  # backend key -> service, address, check types
        self._config: config.XdplbConfig | None = None
        # Remembers the file's pieces: a reload reads what changed.
        self._loader = loader or config.IncrementalLoader()
        self._frozen_after_ready = False
        self._plane: bpf.DataPlane | None = None
        self._neighbours: neighbours.NeighbourWatcher | None = None
        self._links: link_watcher.LinkWatcher | None = None
        self._reattacher: link_reattach.Reattacher | None = None
        self._scheduler: healthchecks.ProcessScheduler | None = None
        self._events: healthchecks.EventStream | None = None
        self._speaker: bgp.Speaker | None = None
        self._reconciler: reconciler.Reconciler | None = None
        self._prebuild: asyncio.Task[None] | None = None
        self._started_faces: list[status.Face] = []
        self._overrides: dict[str, config.AdminState] = {}
        self._dirty = asyncio.Event()
        self._changed: set[str] | None = set()  # services to look at in the next pass (None: all)
        self._health: dict[str, desired.Health] = {}  # by backend key, kept from health events
        self._durations: dict[str, float] = {}  # last check duration, by backend key
        self._unknown: set[str] = set()  # checked, enabled backends with no verdict yet
        self._settled = asyncio.Event()  # set when _unknown empties
        self._macs: dict[config.IpAddress, bpf.NextHop | None] = {}
        self._services_of: dict[config.IpAddress, set[str]] = {}  # backend address -> names of its services
        self._addresses_of: dict[str, list[config.IpAddress]] = {}  # service name -> its backends' addresses
        self._checked_of: dict[str, list[str]] = {}  # service name -> keys of its backends that run checks
        self._pinned_of: dict[str, dict[config.IpAddress, str]] = {}  # service name -> backends pinned to interfaces
        self._routed_of: dict[str, list[config.IpAddress]] = {}  # service name -> its tunnelled backends
        self._path_ids: dict[str, int] = {}  # backend key -> its check path (checks with via: dataplane)
        self._free_path_ids: collections.deque[int] = collections.deque(range(bpf.MAX_CHECK_PATHS))
        self._first_seen: dict[str, float] = {}  # service name -> when it first appeared (monotonic)
        self._ready = False
        self._started_at = time.time()
        self._reloads = {"success": 0, "failure": 0}
        self._transitions: collections.Counter[str] = collections.Counter()  # health changes, by the state entered
        self._last_reload_error: str | None = None
        self._last_reload_success: float | None = None
        self._cleaned = False
        self.ready_event = asyncio.Event()  # set once VIPs may be announced (tests wait on it)
        self._background: set[asyncio.Task[Any]] = set()
        self._changing = asyncio.Lock()  # reloads and admin changes, one at a time
        self._restart = False  # set by restart_stop(): cleanup leaves XDP attached
        self._takeover: dict[str, bpf.EarlierProgram] = {}  # interface -> the earlier run's program, until ready

    # lifecycle

    async def run(self, *, handle_signals: bool = True) -> None:
        """Set up, start, serve until stopped (SIGTERM/SIGINT, or the stop trigger), clean up.

        With ``handle_signals`` (main thread only) SIGTERM and SIGINT stop the daemon and SIGHUP reloads.
        """
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2) if handle_signals else ()
        for signum in signals:
            if signum == signal.SIGHUP:
                loop.add_signal_handler(signum, lambda: self._spawn(self.reload(), "reload"))
            elif signum == signal.SIGUSR2:
                loop.add_signal_handler(signum, self.restart_stop)
            else:
                loop.add_signal_handler(signum, self._signalled, signum)
        try:
            await self.setup()
            await self.start()
            await self.serve()
        finally:
            await self.cleanup()
            for signum in signals:
                loop.remove_signal_handler(signum)

    @property
    def restarting(self) -> bool:
        """Whether the stop asked for is a restart stop."""
        return self._restart

    def restart_stop(self) -> None:
        """Stop for a restart or an upgrade: checks, speaker and API stop, XDP stays attached with its state (the
        next run takes over from it), no drain. Routes are withdrawn as on a full stop, unless
        ``bgp.graceful_restart`` is set: then the peers keep them until the next run's End-of-RIB."""
        if self.stop_trigger.is_set():  # the first stop asked for is the one done: a full stop stays one
            log.info("event=restart_stop_ignored reason=already_stopping")
            return
        log.info("event=stopping reason=restart xdp=kept_attached")
        self._restart = True
        self.stop_trigger.set()

    def _signalled(self, signum: int) -> None:
        log.info("event=stopping reason=signal signal=%s", signal.Signals(signum).name)
        self.stop_trigger.set()

    async def setup(self) -> None:
        """Load and validate the config, load the XDP program (seconds: clang runs) and attach it. Health checks
        start first, unless one goes through the data plane (its path needs the program)."""
        self._config = self._initial_config or self._loader.load(str(self.config_path))
        preflight.verify(self._config, source=str(self.config_path))  # what `xdplb check` refuses, refused here
        self._last_reload_success = time.time()
        if self.state_file is not None:
            keys = (service.backend_key(backend) for service, backend in self._config.backends())
            self._overrides = overrides.load(self.state_file, keys)
        if not _wants_check_paths(self._config):
            # No check goes through the data plane: the first verdicts come in while clang compiles the program.
            self._start_checks(self._config)
        plane = self._plane_factory(_plane_settings(self._config))
        self._plane = plane
        self._reconciler = reconciler.Reconciler(plane, None)
        # Tables built on the other core while clang compiles the program: the first verdicts only write maps.
        self._prebuild = asyncio.create_task(
            self._reconciler.prebuild(self._config, self._overrides), name="maglev prebuild"
        )
        self._prebuild.add_done_callback(_log_prebuild_failure)
        # The neighbour table is read while clang compiles too (seconds, with thousands of backends on the link).
        reading: asyncio.Task[None] | None = None
        ifindexes = _interface_indexes(self._config)
        if ifindexes is not None:
            self._neighbours = self._neighbour_factory(self._macs_changed, interfaces=ifindexes)
            reading = asyncio.create_task(self._neighbours.start(), name="neighbour table")
        try:
            await asyncio.to_thread(plane.setup)
        finally:
            if reading is not None:
                await asyncio.gather(reading, return_exceptions=True)
        if reading is not None:
            reading.result()  # a watcher that failed to start fails the setup, as it did after the compile
        plane.set_tunnel(*_tunnel_settings(self._config))
        earlier = await asyncio.to_thread(_earlier_programs, plane, self._config)
        for interface in self._config.interfaces:
            if interface.name in earlier:  # it forwards with the last run's state until this run is ready
                plane.prepare(interface.name)
                self._takeover[interface.name] = earlier[interface.name]
                log.info(
                    "event=xdp_takeover_pending interface=%s mode=%s prog_id=%d "
                    "note=earlier_program_forwards_until_ready",
                    interface.name,
                    *earlier[interface.name],
                )
            else:
                plane.attach(interface.name, interface.mode)
        if _wants_check_paths(self._config):
            await asyncio.to_thread(plane.enable_check_paths)
            self._spawn(
                asyncio.to_thread(_warn_about_check_routes, self._config, set(plane.attached_ifindexes.values())),
                "check route warnings",
            )
        if self._neighbours is None:
            self._neighbours = self._neighbour_factory(self._macs_changed, interfaces=plane.attached_ifindexes)
            await self._neighbours.start()
        _warn_about_neighbour_limits(self._config)
        _warn_about_forwarding(self._config)
        if self._link_factory is not None:
            self._links = self._link_factory(lambda: self._mark(()))  # a pass looks at the links: _reattach
            await self._links.start()
            self._reattacher = link_reattach.Reattacher(plane, self._links)
        self._update_targets(self._config)
        await self._converge()  # services without checks in the maps (the rest join on verdicts), nothing announced

    async def start(self) -> None:
        """Start health checks (unless ``setup()`` did), the BGP speaker (announcing nothing yet) and the API."""
        cfg = self._require_config()
        if self._scheduler is None:
            self._start_checks(cfg)
        await self._start_speaker(cfg.bgp)
        for make in self.face_factories:
            face = make(self)
            self._started_faces.append(face)
            await face.setup()
            await face.start()
        self.loop_probe.start()
        # Everything loaded so far (bcc and clang's objects, the config, the modules) lives as long as the daemon:
        # out of the collector's reach, a full collection no longer walks it, which stalled the loop for 100-200 ms
        # every few seconds (measured with the scale lab's loop probe).
        gc.freeze()
        self._started_at = time.time()
        log.info("event=started config=%s services=%d", self.config_path, len(cfg.services))

    def _start_checks(self, cfg: config.XdplbConfig) -> None:
        workers = self.check_workers or check_workers(cfg)
        self._scheduler = healthchecks.ProcessScheduler(workers=workers, on_check=self._observe_check)
        self._update_targets(cfg)
        self._events = self._scheduler.events()  # before the first check: every verdict arrives as an event
        self._scheduler.start()

    async def serve(self) -> None:
        """Run the root tasks until the stop trigger fires or one of them fails."""
        assert self._events is not None
        events = self._events
        try:
            async with asyncio.TaskGroup() as group:
                for name, coro, forever in (
                    ("reconcile", self._reconcile_loop(), True),
                    ("health-events", self._health_events(events), True),
                    ("neighbours", self._probe_loop(), True),
                    ("readiness", self._readiness(), False),
                ):
                    group.create_task(self._guard(name, coro, forever=forever), name=name)
                await self.stop_trigger.wait()
                raise _Stop
        except* _Stop:
            pass
        finally:
            events.close()

    async def cleanup(self) -> None:
        """Withdraw routes, drain, stop checks, API and ExaBGP, detach XDP. Safe after a partial setup."""
        if self._cleaned:
            return
        self._cleaned = True
        errors: list[BaseException] = []

        async def step(name: str, action: Callable[[], Awaitable[Any]]) -> None:
            try:
                await action()
            except Exception as error:  # keep going: the rest must still be released
                errors.append(error)
                log.error("event=cleanup_failed step=%s error=%s", name, error)

        if self._speaker is not None:
            speaker = self._speaker
            # A restart stop under graceful restart leaves the routes with the peers; any other stop withdraws them
            # before closing the sessions.
            keep = (
                self._restart
                and self._config is not None
                and self._config.bgp is not None
                and self._config.bgp.graceful_restart is not None
            )
            await step("bgp", functools.partial(speaker.stop, withdraw=not keep))
            if self.drain_seconds > 0 and self._plane is not None and self._plane.attached and not self._restart:
                log.info("event=draining seconds=%.1f", self.drain_seconds)
                await asyncio.sleep(self.drain_seconds)
        for face in reversed(self._started_faces):
            await step(type(face).__name__, face.cleanup)
        self._started_faces.clear()
        await step("loop-probe", self.loop_probe.stop)
        if self._scheduler is not None:
            await step("healthchecks", self._scheduler.stop)
        if self._neighbours is not None:
            watcher = self._neighbours
            await step("neighbours", lambda: asyncio.to_thread(watcher.close))
        if self._links is not None:
            links = self._links
            await step("links", lambda: asyncio.to_thread(links.close))
        if self._prebuild is not None:
            self._prebuild.cancel()
        if self._plane is not None:
            plane = self._plane
            if self._restart:
                await step("dataplane", lambda: asyncio.to_thread(plane.cleanup, detach=False))
            else:
                for name, earlier in self._takeover.items():  # a full stop before this run took over
                    await step("dataplane", functools.partial(asyncio.to_thread, plane.release, name, earlier.mode))
                await step("dataplane", lambda: asyncio.to_thread(plane.cleanup))
        log.info("event=stopped errors=%d restart=%s", len(errors), self._restart)

    # status.Controller

    @property
    def running_config(self) -> config.XdplbConfig:
        """The configuration in force."""
        return self._require_config()

    @property
    def dataplane(self) -> bpf.DataPlane | None:
        """The loaded data plane (None before ``setup()``): its maps, for tests and diagnostics."""
        return self._plane

    @property
    def ready(self) -> bool:
        """Whether VIPs may be announced: attached, and every backend's first verdict in (or the grace over)."""
        return self._ready

    def snapshot(self) -> status.Snapshot:
        """The current state, for the API, the console and the metrics."""
        return self.snapshot_builder()()

    def snapshot_builder(self) -> Callable[[], status.Snapshot]:
        """Read the state now (milliseconds); the returned function assembles the snapshot, in any thread."""
        cfg = self._require_config()
        assert self._plane is not None and self._reconciler is not None
        return snapshot.gather_snapshot(
            version=version.installed_version(),
            cfg=cfg,
            config_source=str(self.config_path),
            started_at=self._started_at,
            ready=self._ready,
            health=self._health,
            durations=self._durations,
            overrides=self._overrides,
            plane=self._plane,
            routes=self._reconciler.routes,
            speaker=self._speaker,
            reloads=self._reloads,
            health_transitions=self._transitions,
            last_reload_error=self._last_reload_error,
            last_reload_success=self._last_reload_success,
            dataplane_errors=self._reconciler.dataplane_errors,
            checker_restarts=self._scheduler.restarts if self._scheduler is not None else 0,
            xdp_reattaches=self._reattacher.counts if self._reattacher is not None else {},
        )

    async def reload(self) -> status.ReloadResult:
        """Re-read the config file and apply it as a diff, completely or not at all (then the running config stays,
        the failure is counted and ``last_reload_error`` says why). One reload or admin change at a time."""
        async with self._changing:
            return await self._reload()

    async def _reload(self) -> status.ReloadResult:
        old = self._require_config()
        started = time.monotonic()
        try:
            # what `xdplb check` refuses, refused
            new = await asyncio.to_thread(_load_for_reload, self._loader, self.config_path)
        except (config.ConfigError, OSError, ValueError, RecursionError, MemoryError) as error:
            return self._reload_failed(old, str(error))
        loaded = time.monotonic()
        try:
            changes = await self._apply_config(old, new)
        except (config.XdplbError, OSError) as error:  # undone: nothing of the new config is in force
            return self._reload_failed(old, f"{self.config_path}: {error}")
        except Exception as error:  # a bug; still undone, and said as a refusal rather than a 500
            log.exception("event=reload_failed config=%s", self.config_path)
            return self._reload_failed(old, f"{self.config_path}: internal error: {type(error).__name__}")
        self._reloads["success"] += 1
        self._last_reload_error = None
        self._last_reload_success = time.time()
        message = "applied: " + ("; ".join(changes) if changes else "no change")
        log.info("event=reload_applied config=%s load_seconds=%.3f apply_seconds=%.3f changes=%s", self.config_path,
                 loaded - started, time.monotonic() - loaded, "; ".join(changes) or "none")  # fmt: skip
        return status.ReloadResult(True, new.digest(), message)

    def _reload_failed(self, running: config.XdplbConfig, error: str) -> status.ReloadResult:
        self._reloads["failure"] += 1
        self._last_reload_error = error
        log.error("event=reload_rejected config=%s error=%s", self.config_path, error.replace("\n", "; "))
        return status.ReloadResult(False, running.digest(), error)

    async def set_admin(self, backend_key: str, state: config.AdminState | None) -> None:
        """Override a backend's admin state at run time (None: back to the file's). KeyError if unknown."""
        async with self._changing:
            await self._set_admin(backend_key, state)

    async def _set_admin(self, backend_key: str, state: config.AdminState | None) -> None:
        cfg = self._require_config()
        service = _service_of({service.name: service for service in cfg.services}, backend_key)
        if service is None:
            raise KeyError(backend_key)
        if state is None:
            self._overrides.pop(backend_key, None)
        else:
            self._overrides[backend_key] = state
        log.info("event=admin_override backend=%s state=%s", backend_key, state.value if state else "file")
        self._save_overrides()
        self._update_targets(cfg, changed={service.name})
        self._mark({service.name})
        await self._converge()

    # internals

    def _save_overrides(self) -> None:
        if self.state_file is not None:
            overrides.save(self.state_file, self._overrides)

    def _update_targets(
        self,
        cfg: config.XdplbConfig,
        overrides_: Mapping[str, config.AdminState] | None = None,
        *,
        changed: Set[str] | None = None,
    ) -> None:
        """Hand the checked set to the scheduler (a diff: unchanged backends keep their state), and follow it.

        ``changed``: the names of the services whose backends, checks or admin states may differ from the last call
        (removed ones too); None: all of them. The work is in proportion to these.
        HealthCheckConfigError if a check cannot be sent; nothing has changed then.
        """
        overrides_ = self._overrides if overrides_ is None else overrides_
        if changed is None:
            services = list(cfg.services)
            names = {service.name for service in services} | self._addresses_of.keys()
        else:
            names = set(changed)
            services = [service for service in cfg.services if service.name in names]
        fresh: desired.HealthTargets = {}
        for service in services:
            for backend in service.backends:
                checks = cfg.resolved_checks(service, backend)
                if checks:
                    fresh[service.backend_key(backend)] = (service, backend, checks)
        gone = [key for name in names for key in self._checked_of.get(name, ()) if key not in fresh]
        vias = self._write_check_paths(fresh)
        if self._scheduler is not None:
            if changed is None:
                self._scheduler.update(_targets(fresh, overrides_, vias))
            else:
                self._scheduler.change(_targets(fresh, overrides_, vias), gone)
        # Nothing below can fail: the scheduler took the change.
        self._forget_check_paths(
            [key for key in gone if key in self._path_ids]
            + [key for key in fresh if key in self._path_ids and key not in vias]
        )
        leaving = [(key, *self._members[key][:2]) for key in gone if key in self._members]
        self._tell(lambda observer: observer.forget(leaving))
        for key in gone:
            self._members.pop(key, None)
            self._health.pop(key, None)
            self._durations.pop(key, None)
            self._unknown.discard(key)
        for name in names:
            self._checked_of.pop(name, None)
            self._pinned_of.pop(name, None)
            self._routed_of.pop(name, None)
            for address in self._addresses_of.pop(name, ()):
                owners = self._services_of.get(address)
                if owners is not None:
                    owners.discard(name)
                    if not owners:
                        del self._services_of[address]
        now = time.time()
        for key, (service, backend, checks) in fresh.items():
            self._checked_of.setdefault(service.name, []).append(key)
            self._members[key] = (service.name, backend.address_text, tuple(check.type for check in checks))
            health = self._health.setdefault(key, desired.Health("unknown", _NO_VERDICT, now))
            admin = desired.admin_state(service, backend, overrides_)
            if health.state == "unknown" and admin is not config.AdminState.DISABLED:
                self._unknown.add(key)
            else:
                self._unknown.discard(key)
        self._set_settled()
        for service in services:
            # The neighbours watched: those of backends on a segment of ours (a tunnelled one is routed).
            on_link = [backend for backend in service.backends if service.forwarding_of(backend) == "l2"]
            routed = [backend.address for backend in service.backends if service.forwarding_of(backend) != "l2"]
            if routed:
                self._routed_of[service.name] = routed
            self._addresses_of[service.name] = [backend.address for backend in on_link]
            for backend in on_link:
                self._services_of.setdefault(backend.address, set()).add(service.name)
            pinned = {backend.address: backend.interface for backend in service.backends if backend.interface}
            if pinned:
                self._pinned_of[service.name] = pinned
        if self._neighbours is not None:
            pinned = {address: name for each in self._pinned_of.values() for address, name in each.items()}
            found = self._neighbours.watch(self._services_of, pinned=pinned)
            self._macs = {address: self._macs.get(address) for address in self._services_of} | found

    def _write_check_paths(self, fresh: desired.HealthTargets) -> dict[str, healthchecks.ViaDataPlane]:
        """The data plane's path for every backend of ``fresh`` that checks through it (written before a checker can
        use it: a marked packet with no path is dropped), by backend key."""
        vias: dict[str, healthchecks.ViaDataPlane] = {}
        for key, (service, backend, checks) in fresh.items():
            vip = service.check_vip(backend)
            if vip is None or not _through_data_path(checks):
                continue
            if self._plane is None or not self._plane.check_paths_enabled:
                raise DaemonError("checks with via: dataplane need the check path programs: none are loaded")
            path_id = self._path_ids.get(key)
            if path_id is None:
                if not self._free_path_ids:
                    raise DaemonError(f"{key}: no check path left (at most {bpf.MAX_CHECK_PATHS})")
                path_id = self._free_path_ids.popleft()
                self._path_ids[key] = path_id
            forwarding = service.forwarding_of(backend)
            self._plane.set_check_path(path_id, vip, backend.address, None if forwarding == "l2" else forwarding)
            vias[key] = healthchecks.ViaDataPlane(bpf.check_mark(path_id), vip)
        return vias

    def _forget_check_paths(self, keys: Iterable[str]) -> None:
        for key in keys:
            path_id = self._path_ids.pop(key)
            self._free_path_ids.append(path_id)
            if self._plane is not None:
                try:
                    self._plane.remove_check_path(path_id)
                except bpf.DataPlaneError as error:  # a stale path only drops packets nobody sends any more
                    log.warning("event=check_path_remove_failed backend=%s error=%s", key, error)

    @property
    def _tunnelled(self) -> set[config.IpAddress]:
        """Every tunnelled backend's address."""
        return {address for routed in self._routed_of.values() for address in routed}

    def _set_settled(self) -> None:
        if self._unknown:
            self._settled.clear()
        else:
            self._settled.set()

    def _observe_check(self, run: healthchecks.CheckRun) -> None:
        self._tell(lambda observer: observer.observe_schedule_lag(run.lag))
        member = self._members.get(run.key)
        if member is not None:
            self._durations[run.key] = run.result.duration
            if run.check < len(member[2]):
                check_type = member[2][run.check]
                self._tell(
                    lambda observer: observer.observe_check(
                        run.key, member[0], member[1], check_type, run.result.duration, run.result.ok
                    )
                )

    def _tell(self, event: Callable[[status.Observer], None]) -> None:
        """Give every observer an event. One that raises is logged (its first failure, then one in 1,000) and
        skipped: a face never stops the core, nor keeps an event from the others."""
        for observer in self.observers:
            try:
                event(observer)
            except Exception:
                failures = self._observer_failures[id(observer)] = self._observer_failures.get(id(observer), 0) + 1
                if failures % 1000 == 1:
                    log.exception("event=observer_failed observer=%s failures=%d", type(observer).__name__, failures)

    def _require_config(self) -> config.XdplbConfig:
        if self._config is None:
            raise DaemonError("the daemon is not set up: call setup() first")
        return self._config

    def _mark(self, services: Iterable[str] | None) -> None:
        """Look at these services in the next pass (None: all of them)."""
        if services is None:
            self._changed = None
        elif self._changed is not None:
            self._changed.update(services)
        self._dirty.set()

    def _macs_changed(self, changed: Mapping[config.IpAddress, bpf.NextHop | None]) -> None:
        """The neighbour watcher's report: record the facts; the next pass programs them."""
        self._macs.update(changed)
        names: set[str] = set()
        for address in changed:
            names.update(self._services_of.get(address, ()))
        self._mark(names)

    async def _converge(self) -> None:
        """One reconciler pass over the services marked since the last one."""
        assert self._reconciler is not None
        cfg = self._require_config()
        changed, self._changed = self._changed, set()
        now = time.monotonic()
        for service in cfg.services:
            self._first_seen.setdefault(service.name, now)
        unsettled = {self._members[key][0] for key in self._unknown if key in self._members}
        settling = {name for name in unsettled if now - self._first_seen[name] < self.start_grace}
        failed = await self._reconciler.converge(
            cfg,
            self._health,
            self._overrides,
            self._macs,
            ready=self._ready,
            why_not_ready="starting: waiting for the first health verdicts",
            settling=settling,
            changed=changed,
        )
        if self._ready and self._speaker is not None:
            self._speaker.end_of_rib()  # the routes are complete: with graceful restart, the peers hear it
        if self._ready and changed is None and not settling and not self._frozen_after_ready:
            # What the first complete pass made (every backend's health and status in the data plane) lives as
            # long as the config: out of the collector's reach, as the modules are since start().
            gc.freeze()
            self._frozen_after_ready = True
        loop = asyncio.get_running_loop()
        if failed:  # data-plane errors: counted and logged by the reconciler; try those services again
            loop.call_later(RETRY_INTERVAL, self._mark, failed)
        if settling:  # verdicts arrive as health events; this pass is for a grace that runs out first
            expires = min(self._first_seen[name] for name in settling) + self.start_grace - now
            loop.call_later(max(expires, 0.0), self._mark, settling)

    async def _apply_config(self, old: config.XdplbConfig, new: config.XdplbConfig) -> list[str]:
        """Apply ``new`` in place of ``old``: every step that can fail comes first, and is undone if a later one
        fails; only then does ``new`` become the running config. Unchanged backends keep their state."""
        changes = reload_diff.describe_changes(old, new)
        by_name = {service.name: service for service in new.services}
        overrides_ = {k: v for k, v in self._overrides.items() if _service_of(by_name, k) is not None}
        old_services = {service.name: service for service in old.services}
        changed = {service.name for service in new.services if old_services.pop(service.name, None) != service}
        changed |= old_services.keys()  # removed
        undo: list[Callable[[], Awaitable[object]]] = []
        try:
            await self._apply_interfaces(old, new, undo)
            changes += self._apply_tunnel(old, new, undo)
            changes += await self._apply_bgp(old, new, undo)
            if self._plane is not None and not self._plane.check_paths_enabled and _wants_check_paths(new):
                await asyncio.to_thread(self._plane.enable_check_paths)  # stays loaded if the reload is undone
            # verifies every check before it changes anything; a policy changed may change any service's checks
            self._update_targets(new, overrides_, changed=None if new.policies != old.policies else changed)
        except BaseException:
            for step in reversed(undo):
                try:
                    await step()
                except Exception:
                    log.exception("event=reload_undo_failed config=%s", self.config_path)
            raise
        _warn_about_forwarding(new)  # interfaces and tunnelled backends may have come, whatever the settings did
        if self._plane is not None and self._plane.check_paths_enabled:  # a route lookup per such backend: not awaited
            self._spawn(
                asyncio.to_thread(_warn_about_check_routes, new, set(self._plane.attached_ifindexes.values())),
                "check route warnings",
            )
        if new.dataplane.model_copy(update=_tunnel_fields_of(old)) != old.dataplane:
            changes.append("dataplane settings changed: take effect at the next restart")
        if (new.api.listen, new.api.idle_timeout) != (old.api.listen, old.api.idle_timeout):
            changes.append("api listen address or idle timeout changed: takes effect at the next restart")
        self._config = new
        if new.interfaces != old.interfaces and self._neighbours is not None and self._plane is not None:
            self._neighbours.set_interfaces(self._plane.attached_ifindexes)  # backends on an added one
        if overrides_ != self._overrides:
            self._overrides = overrides_
            self._save_overrides()
        self._mark(changed)
        await self._converge()
        if self._plane is not None and _tunnel_settings(new) != _tunnel_settings(old):
            self._plane.set_tunnel(*_tunnel_settings(new))  # a source taken away: only once its backends are gone
        return changes

    async def _apply_interfaces(
        self, old: config.XdplbConfig, new: config.XdplbConfig, undo: list[Callable[[], Awaitable[object]]]
    ) -> None:
        """Attach, re-attach and detach as ``new`` says; each step done adds its reverse to ``undo``."""
        plane = self._plane
        assert plane is not None
        old_ifaces = {i.name: i for i in old.interfaces}
        new_ifaces = {i.name: i for i in new.interfaces}
        for name, interface in new_ifaces.items():
            before = old_ifaces.get(name)
            if before == interface:
                continue
            if before is not None:
                await asyncio.to_thread(plane.detach, name)
                undo.append(functools.partial(asyncio.to_thread, plane.attach, name, before.mode))
            await asyncio.to_thread(plane.attach, name, interface.mode)
            undo.append(functools.partial(asyncio.to_thread, plane.detach, name))
        for name in old_ifaces.keys() - new_ifaces.keys():
            await asyncio.to_thread(plane.detach, name)
            undo.append(functools.partial(asyncio.to_thread, plane.attach, name, old_ifaces[name].mode))

    async def _apply_bgp(
        self, old: config.XdplbConfig, new: config.XdplbConfig, undo: list[Callable[[], Awaitable[object]]]
    ) -> list[str]:
        """Bring the speaker to ``new.bgp`` in place: only the sessions of peers added, removed or changed are
        touched (``bgp.Speaker.reconfigure``). Route attributes are not the speaker's: the next pass re-announces the
        routes with them. A refused change leaves the speaker as it was."""
        if _sessions(old.bgp) == _sessions(new.bgp):
            return []
        previous = self._speaker
        if new.bgp is None:
            self._speaker = None
            assert self._reconciler is not None
            self._reconciler.speaker = None
            if previous is not None:
                await previous.stop()  # withdraws its routes first

                async def restart() -> None:
                    await self._start_speaker(old.bgp)

                undo.append(restart)
            return ["bgp removed: every route withdrawn"]
        if previous is None:
            await self._start_speaker(new.bgp)

            async def remove() -> None:
                started, self._speaker = self._speaker, None
                assert self._reconciler is not None
                self._reconciler.speaker = None
                if started is not None:
                    await started.stop()

            undo.append(remove)
            return ["bgp added: speaker started"]
        lines = await previous.reconfigure(new.bgp)  # in place; ReconfigureError: the old config still in force
        old_bgp = old.bgp
        assert old_bgp is not None

        async def restore() -> None:
            await previous.reconfigure(old_bgp)

        undo.append(restore)
        return [f"bgp {line}" for line in lines]

    def _apply_tunnel(
        self, old: config.XdplbConfig, new: config.XdplbConfig, undo: list[Callable[[], Awaitable[object]]]
    ) -> list[str]:
        """Tunnel sources and GUE port are a map write: applied now, before the pass that writes the backends that
        need them. A source the new config drops stays until that pass has taken its backends out (``_reload``
        writes the new settings after it), so no frame leaves with no source."""
        plane = self._plane
        if plane is None or _tunnel_settings(new) == _tunnel_settings(old):
            return []
        before = _tunnel_settings(old)
        v4, v6, port = _tunnel_settings(new)
        plane.set_tunnel(v4 if v4 is not None else before[0], v6 if v6 is not None else before[1], port)

        async def restore() -> None:
            plane.set_tunnel(*before)

        undo.append(restore)
        return ["dataplane tunnel settings applied"]

    async def _start_speaker(self, bgp_config: config.BgpConfig | None) -> None:
        """A started speaker for ``bgp_config`` (None: no BGP), announcing nothing until the next pass."""
        self._speaker = None if bgp_config is None else self._speaker_factory(bgp_config)
        if self._speaker is not None:
            await self._speaker.start()
        assert self._reconciler is not None
        self._reconciler.speaker = self._speaker
        self._mark(())  # a pass hands the new speaker the routes

    async def _reconcile_loop(self) -> None:
        while True:
            try:
                async with asyncio.timeout(RECONCILE_INTERVAL):  # not wait_for: on 3.11 it can swallow a cancel
                    await self._dirty.wait()
                await asyncio.sleep(DEBOUNCE)  # let a burst of events make one pass
            except TimeoutError:
                self._mark(None)
            self._dirty.clear()
            await self._reattach()
            await self._converge()

    async def _reattach(self) -> None:
        """Attach XDP again where the link watcher saw it lost (here: the reconcile loop is the plane's writer)."""
        reattacher = self._reattacher
        if reattacher is None or not reattacher.pending():
            return
        async with self._changing:  # never beside a reload's own attach and detach
            modes = {interface.name: interface.mode for interface in self._require_config().interfaces}
            attached, failed = await reattacher.ensure(modes)
        if attached and self._neighbours is not None:  # a re-created interface has a new ifindex
            self._neighbours.set_interfaces(reattacher.plane.attached_ifindexes)
        if failed:
            asyncio.get_running_loop().call_later(RETRY_INTERVAL, self._mark, ())

    async def _health_events(self, events: healthchecks.EventStream) -> None:
        async for change in events:
            log.info(
                "event=backend_health backend=%s from=%s to=%s reason=%s",
                change.key, change.old.value, change.new.value, change.reason,
            )  # fmt: skip
            member = self._members.get(change.key)
            if member is None:  # a target a reload removed
                continue
            self._health[change.key] = desired.Health(change.new.value, change.reason, change.at)
            if change.new is healthchecks.HealthState.UNKNOWN:
                if change.admin is not config.AdminState.DISABLED:
                    self._unknown.add(change.key)
            else:
                self._unknown.discard(change.key)
                self._transitions[change.new.value] += 1
            self._set_settled()
            self._mark((member[0],))
            if change.new is not healthchecks.HealthState.UNKNOWN:
                self._tell(lambda observer: observer.health_transition(member[0], member[1], change.new.value))

    async def _probe_loop(self) -> None:
        """Probe backends whose MAC is unknown, so the kernel resolves them; the answers come as events.

        Tunnelled backends are probed too when the data plane dropped frames for want of a next hop since the last
        round: a datagram to a routed address makes the kernel resolve the route's gateway, which nothing else
        keeps resolved when no health check goes that way."""
        watcher = self._neighbours
        assert watcher is not None
        no_route = None
        while True:
            unresolved = watcher.unresolved()
            dropped = self._plane.read_totals().drop_no_route if self._plane is not None and self._routed_of else 0
            if no_route is not None and dropped > no_route:
                unresolved = [*unresolved, *self._tunnelled]
            no_route = dropped
            if unresolved:
                await asyncio.to_thread(watcher.probe, unresolved)
            await asyncio.sleep(PROBE_INTERVAL)

    async def _readiness(self) -> None:
        """Ready once every checked backend has a verdict, or after ``start_grace`` seconds."""
        try:
            async with asyncio.timeout(self.start_grace):
                await self._settled.wait()
        except TimeoutError:
            log.warning("event=start_grace_over seconds=%.1f unknown_backends_treated_as_down", self.start_grace)
        if self._takeover:
            self._mark(None)
            await self._converge()  # every service in this run's maps before its program goes in
            await self._take_over()
        self._ready = True
        self.ready_event.set()
        log.info("event=ready")
        self._mark(None)

    async def _take_over(self) -> None:
        """Swap this run's program in where an earlier run's still forwards: in that program's mode, one atomic
        step; when the config asks for another mode, the earlier one has to go first (a gap, logged)."""
        plane, cfg = self._plane, self._require_config()
        assert plane is not None
        modes = {interface.name: interface.mode for interface in cfg.interfaces}
        for earlier in dict.fromkeys(self._takeover.values()):  # one program, usually on every interface
            try:
                await asyncio.to_thread(plane.inherit, earlier)
            except (bpf.DataPlaneError, OSError) as error:  # counters from zero, flows by Maglev: it still forwards
                log.warning("event=state_not_inherited prog_id=%d error=%s", earlier.prog_id, error)
        for name, earlier in list(self._takeover.items()):
            wanted = modes.get(name, "auto")
            try:
                if wanted in ("auto", earlier.mode):
                    await asyncio.to_thread(plane.take_over, name, earlier)
                else:
                    log.warning(
                        "event=xdp_takeover_mode_change interface=%s earlier=%s mode=%s note=brief_gap",
                        name,
                        earlier.mode,
                        wanted,
                    )
                    await asyncio.to_thread(plane.release, name, earlier.mode)
                    await asyncio.to_thread(plane.attach, name, wanted)
            except bpf.DataPlaneError as error:  # the earlier program keeps forwarding; the link reattacher retries
                log.error("event=xdp_takeover_failed interface=%s error=%s", name, error)
                continue
            finally:
                self._takeover.pop(name, None)
            log.info("event=xdp_taken_over interface=%s mode=%s", name, plane.attached.get(name))

    async def _guard(self, name: str, coro: Coroutine[Any, Any, None], *, forever: bool) -> None:
        """Log a root task's crash at once (it then stops the daemon), and a return of one meant to run forever."""
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("event=task_crashed task=%s", name)
            log.info("event=stopping reason=task_crashed task=%s", name)
            raise
        if forever and not self.stop_trigger.is_set():
            log.error("event=task_finished_unexpectedly task=%s", name)
            self.stop_trigger.set()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _earlier_programs(plane: bpf.DataPlane, cfg: config.XdplbConfig) -> dict[str, bpf.EarlierProgram]:
    """The configured interfaces where an earlier run's program still forwards, with that program."""
    found: dict[str, bpf.EarlierProgram] = {}
    for interface in cfg.interfaces:
        try:
            earlier = plane.earlier_program(interface.name)
        except bpf.DataPlaneError:  # no such interface: attach says so
            continue
        if earlier is not None:
            found[interface.name] = earlier
    return found


def _service_of(by_name: Mapping[str, config.ServiceConfig], backend_key: str) -> config.ServiceConfig | None:
    """The service (of these, by name) that has the backend ``backend_key``: ``NAME/ADDRESS``, where a name may
    hold a "/"."""
    name, _, address = backend_key.rpartition("/")
    service = by_name.get(name)
    if service is None or not any(backend.address_text == address for backend in service.backends):
        return None
    return service


def _log_prebuild_failure(task: "asyncio.Task[None]") -> None:
    if not task.cancelled() and task.exception() is not None:  # only a head start: the passes build what they need
        log.error("event=maglev_prebuild_failed error=%r", task.exception())


def _warn_about_neighbour_limits(cfg: config.XdplbConfig) -> None:
    """Say which sysctls to raise when the backends outnumber what the kernel's neighbour table keeps."""
    for family in (4, 6):
        backends = {
            backend.address
            for service, backend in cfg.backends()
            if backend.address.version == family and service.forwarding_of(backend) == "l2"
        }
        limits = neighbours.neighbour_table_limits(family)
        thresh3 = limits.get("gc_thresh3")
        if thresh3 is not None and len(backends) > thresh3 // 2:
            name = "ipv4" if family == 4 else "ipv6"
            log.warning(
                "event=neighbour_table_too_small family=ipv%d backends=%d gc_thresh3=%d "
                "raise=net.%s.neigh.default.gc_thresh1,gc_thresh2,gc_thresh3 suggested=%d,%d,%d",
                family, len(backends), thresh3, name, len(backends), 2 * len(backends), 4 * len(backends),
            )  # fmt: skip


def _warn_about_forwarding(cfg: config.XdplbConfig, proc_sys: Path = Path("/proc/sys/net")) -> list[str]:
    """Say which forwarding sysctls to turn on when tunnelled backends need them: bpf_fib_lookup refuses to give
    a next hop for a frame that came in on an interface that does not forward (every such frame is dropped, counted
    as ``no_route``). Returns the sysctls named."""
    families = {
        backend.address.version for service, backend in cfg.backends() if service.forwarding_of(backend) != "l2"
    }
    off = []
    for family in sorted(families):
        for interface in cfg.interfaces:
            path = proc_sys / ("ipv4" if family == 4 else "ipv6") / "conf" / interface.name / "forwarding"
            try:
                if path.read_text().strip() == "0":
                    off.append(".".join(path.relative_to(proc_sys.parent).parts))
            except OSError:
                continue  # not there (yet): the attach reports a missing interface
    if off:
        log.warning(
            "event=forwarding_off_for_tunnels set=%s note=tunnelled_frames_are_dropped_as_no_route",
            ",".join(f"{name}=1" for name in off),
        )
    return off


def check_routes_elsewhere(
    cfg: config.XdplbConfig, ifindexes: Collection[int], route_of: Callable[[str], int | None] | None = None
) -> list[tuple[str, int | None]]:
    """The backends checked through the data path whose route leaves by an interface the check path programs are
    not on (``ifindexes``), with that interface's index (None: no route). Their marked checks go to the backend's
    own address unchanged and test nothing of the VIP, so the daemon warns about them. ``route_of`` asks the
    kernel by default (netlink: run it in a thread)."""
    wanted = [
        backend for service, backend in cfg.backends() if _through_data_path(cfg.resolved_checks(service, backend))
    ]
    if not wanted:
        return []
    if route_of is None:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            return check_routes_elsewhere(cfg, ifindexes, functools.partial(_route_interface, ipr))
    addresses = dict.fromkeys(backend.address_text for backend in wanted)
    return [(address, oif) for address in addresses if (oif := route_of(address)) not in ifindexes]


def _route_interface(ipr: Any, address: str) -> int | None:
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        routes = ipr.route("get", dst=address)
    except NetlinkError:
        return None
    oif = routes[0].get_attr("RTA_OIF") if routes else None
    return int(oif) if oif is not None else None


def _warn_about_check_routes(cfg: config.XdplbConfig, ifindexes: Collection[int]) -> None:
    elsewhere = check_routes_elsewhere(cfg, ifindexes)
    for backend, oif in elsewhere[:10]:
        log.warning(
            "event=check_path_route_elsewhere backend=%s ifindex=%s note=its_checks_via_dataplane_go_to_its_"
            "own_address_and_test_nothing_of_the_vip",
            backend,
            oif if oif is not None else "none",
        )
    if len(elsewhere) > 10:
        log.warning("event=check_path_route_elsewhere more_backends=%d", len(elsewhere) - 10)


class _Stop(Exception):
    """Raised inside the root task group to end it when the stop trigger fires."""
