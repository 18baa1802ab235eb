"""Converge the actual state (data-plane maps, BGP announcements) to the desired one.

The reconciler is the only writer of the data plane and of the routes, and runs one pass at a time. A pass is
given the services that changed since the last one (or None: all of them), so its work is in proportion to what
changed; the data plane skips a service whose desired state equals what it holds. Maglev tables are built off
the event loop, in a worker thread (the fill loop is C and lets go of the GIL: about 0.3 ms a table of 16,381),
before the map writes that use them, which run in a worker thread too (one chunk at a time, the data plane's lock
keeping the loop's readers consistent). Each change is logged once; a
data-plane error is logged, counted and reported back, so the caller retries that service.
"""

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Set

import bgp
import bpf
import config
from balancer import desired
from bpf import maglev

__all__ = ["Reconciler"]

log = logging.getLogger(__name__)

_BUILD_CHUNK = 64  # tables built ahead at once; two chunks in flight stay well inside the cache (256): none is
# evicted before it is used
_PASS_SLICE = 100  # services compared with the data plane between two yields to the loop (about 20 ms at 10 each)
_ANY_MAC = "02:00:00:00:00:00"  # a prebuild's stand-in: a table names backends by address, never by MAC


class Reconciler:
    """Applies desired state to a loaded ``DataPlane`` and, if there is one, a started ``bgp.Speaker``."""

    def __init__(self, plane: bpf.DataPlane, speaker: bgp.Speaker | None) -> None:
        self.plane = plane
        self.speaker = speaker
        self.routes: dict[config.Prefix, desired.Route] = {}
        self.errors: dict[str, str] = {}  # what could not be applied, by object, until it is
        self.dataplane_errors = 0  # data-plane updates that failed, since start
        self.passes = 0
        self.last_pass_seconds = 0.0
        self._lock = asyncio.Lock()
        self._planned: tuple[config.XdplbConfig, tuple[desired.VipPlan, ...], set[bpf.ServiceKey]] | None = None
        self._cache_capacity = plane.maglev.capacity  # the cache's own size, restored after a prebuild
        self._prebuilt = False

    async def prebuild(self, cfg: config.XdplbConfig, overrides: Mapping[str, config.AdminState]) -> None:
        """Build, ahead of the first verdicts, the table each service will have once all its backends are up (the
        usual outcome): while the program compiles and the checks rise, so that the first pass only writes maps.
        The cache holds them all until ``converge`` has programmed every service, then goes back to its size."""
        every_mac = {backend.address: _ANY_MAC for _, backend in cfg.backends()}
        services = desired.dataplane_services(cfg, {}, overrides, every_mac)  # no verdict reads as up
        keys = [key for key in (self.plane.table_key(service) for _, service in services) if key is not None]
        cache = self.plane.maglev
        self._cache_capacity = min(self._cache_capacity, cache.capacity)
        cache.resize(max(cache.capacity, len(keys) + self._cache_capacity))
        started = time.monotonic()
        for start in range(0, len(keys), _BUILD_CHUNK):
            await self._build_tables_for(keys[start : start + _BUILD_CHUNK])
        self._prebuilt = True
        log.info("event=maglev_prebuilt tables=%d seconds=%.1f", len(keys), time.monotonic() - started)

    async def converge(
        self,
        cfg: config.XdplbConfig,
        health: Mapping[str, desired.Health],
        overrides: Mapping[str, config.AdminState],
        macs: Mapping[config.IpAddress, bpf.NextHop | str | None],
        *,
        ready: bool,
        why_not_ready: str = "starting",
        settling: Set[str] = frozenset(),
        changed: Set[str] | None = None,
    ) -> set[str]:
        """One pass: data plane first (so routes reflect what it really serves), then BGP.

        ``changed``: names of the services to look at (None: all). Services in ``settling`` (backends' first
        verdicts still due) keep what the data plane has. Returns the names of services that failed to apply.
        """
        async with self._lock:
            started = time.monotonic()
            failed = await self._apply_dataplane(cfg, health, overrides, macs, settling, changed)
            routes = desired.routes(
                cfg,
                self.plane.services,
                ready=ready,
                why_not_ready=why_not_ready,
                settling=settling,
                plan=self._plan(cfg)[0],
            )
            for prefix, route in routes.items():
                before = self.routes.get(prefix)
                if before is None or before.announce != route.announce or before.reason != route.reason:
                    log.info("event=vip_%s vip=%s reason=%s", "up" if route.announce else "down", prefix, route.reason)
            self.routes = routes
            if self.speaker is not None:
                self._apply_routes(routes)
            self.passes += 1
            self.last_pass_seconds = time.monotonic() - started
            if self._prebuilt and not settling and self.plane.maglev.capacity > self._cache_capacity:
                self.plane.maglev.resize(self._cache_capacity)  # every service has its verdicts: the prebuild served
            return failed

    async def _apply_dataplane(
        self,
        cfg: config.XdplbConfig,
        health: Mapping[str, desired.Health],
        overrides: Mapping[str, config.AdminState],
        macs: Mapping[config.IpAddress, bpf.NextHop | str | None],
        settling: Set[str],
        changed: Set[str] | None,
    ) -> set[str]:
        names = None if changed is None else changed - settling
        configured = self._plan(cfg)[1]
        failed: set[str] = set()
        for key in [key for key in self.plane.services if key not in configured]:
            self.plane.remove_service(key)
            self.errors.pop(str(key), None)
        looked_at = [s for s in cfg.services if s.name not in settling and (names is None or s.name in names)]
        todo: list[tuple[str, bpf.Service]] = []
        for start in range(0, len(looked_at), _PASS_SLICE):
            if start:
                await asyncio.sleep(0)  # a full pass at 1,000 services held the loop for 250 ms in one piece
            part = looked_at[start : start + _PASS_SLICE]
            wanted = desired.dataplane_services(cfg, health, overrides, macs, services=part)
            todo += [(name, service) for name, service in wanted if self.plane.needs_update(service)]
        chunks = [todo[start : start + _BUILD_CHUNK] for start in range(0, len(todo), _BUILD_CHUNK)]
        if not chunks:
            return failed
        # Pipelined: the next chunk's tables are built (in a worker thread) while this one is programmed.
        building = asyncio.ensure_future(self._build_tables(service for _, service in chunks[0]))
        try:
            for index, chunk in enumerate(chunks):
                await building
                if index + 1 < len(chunks):
                    building = asyncio.ensure_future(self._build_tables(service for _, service in chunks[index + 1]))
                # In a worker thread: writing tables and entries is map syscalls (an install waits for an RCU grace
                # period in the kernel); on the loop, 500 services stalled it for seconds.
                results = await asyncio.to_thread(self._program, [service for _, service in chunk])
                for (name, service), error in zip(chunk, results, strict=True):
                    if error is None:
                        self.errors.pop(str(service.key), None)
                        continue
                    self.dataplane_errors += 1
                    failed.add(name)
                    self.errors[str(service.key)] = str(error)
                    log.error("event=service_program_failed service=%s vip=%s error=%s", name, service.key, error)
        finally:
            building.cancel()
        return failed

    def _program(self, services: list[bpf.Service]) -> list[bpf.DataPlaneError | None]:
        """``set_service`` for each, in order (the calling thread's); each one's error or None."""
        try:
            self.plane.reserve_tables(services)
        except bpf.DataPlaneError as error:  # only a speed-up: each write installs its own table then
            log.warning("event=maglev_reserve_failed services=%d error=%s", len(services), error)
        errors: list[bpf.DataPlaneError | None] = []
        for service in services:
            try:
                self.plane.set_service(service)
                errors.append(None)
            except bpf.DataPlaneError as error:
                errors.append(error)
        return errors

    async def _build_tables(self, services: Iterable[bpf.Service]) -> None:
        """Build the Maglev tables these services need and the cache lacks, in a worker thread."""
        await self._build_tables_for(
            [key for key in (self.plane.table_key(service) for service in services) if key is not None]
        )

    async def _build_tables_for(self, keys: list[maglev.TableKey]) -> None:
        missing = self.plane.maglev.missing(keys)
        if not missing:
            return
        tables = await asyncio.to_thread(lambda: [maglev.build(key) for key in missing])
        for key, table in zip(missing, tables, strict=True):
            self.plane.maglev.add(key, table)

    def _plan(self, cfg: config.XdplbConfig) -> tuple[tuple[desired.VipPlan, ...], set[bpf.ServiceKey]]:
        """The VIPs' route plan and the data-plane keys of ``cfg``, made once per config, not once per pass."""
        if self._planned is None or self._planned[0] is not cfg:
            self._planned = (cfg, desired.route_plan(cfg), desired.service_keys(cfg))
        return self._planned[1], self._planned[2]

    def _apply_routes(self, routes: Mapping[config.Prefix, desired.Route]) -> None:
        """Hand the speaker the complete set of routes wanted now; it sends the difference on its own time."""
        assert self.speaker is not None
        wanted = {prefix: route.attributes for prefix, route in routes.items() if route.announce}
        for key in [key for key in self.errors if key.startswith("bgp")]:
            del self.errors[key]
        try:
            self.speaker.set_routes(wanted)  # never waits for ExaBGP: a slow peer does not hold up the data plane
        except bgp.BgpError as error:
            self.errors["bgp"] = str(error)
            log.error("event=bgp_set_routes_failed error=%s", error)
        for prefix, refusal in self.speaker.rejected.items():
            self.errors[f"bgp {prefix}"] = str(refusal)
