"""Converge the actual state (data-plane maps, BGP announcements) to the desired one.

Level-triggered: every pass recomputes the whole desired state and applies the difference through idempotent
calls, so a pass after any event, or on a timer, is always right to run. Each change is logged once.
"""

import logging
from collections.abc import Mapping, Set

import bgp
import bpf
import config
from balancer import desired

__all__ = ["Reconciler"]

log = logging.getLogger(__name__)


class Reconciler:
    """Applies desired state to a loaded ``DataPlane`` and, if there is one, a started ``bgp.Speaker``."""

    def __init__(self, plane: bpf.DataPlane, speaker: bgp.Speaker | None) -> None:
        self.plane = plane
        self.speaker = speaker
        self.routes: dict[desired.Prefix, desired.Route] = {}
        self.errors: dict[str, str] = {}  # what the last pass could not apply, by object

    async def converge(
        self,
        cfg: config.XdplbConfig,
        health: Mapping[str, desired.Health],
        overrides: Mapping[str, config.AdminState],
        *,
        ready: bool,
        why_not_ready: str = "starting",
        settling: Set[str] = frozenset(),
    ) -> None:
        """One pass: data plane first (so routes reflect what it really serves), then BGP."""
        errors: dict[str, str] = {}
        wanted = desired.dataplane_services(cfg, health, overrides)
        for key in [key for key in self.plane.services if key not in wanted]:
            self.plane.remove_service(key)
        for key, service in wanted.items():
            try:
                self.plane.set_service(service)
            except bpf.DataPlaneError as error:
                errors[str(key)] = str(error)
                log.error("event=service_program_failed service=%s error=%s", key, error)

        routes = desired.routes(cfg, self.plane.services, ready=ready, why_not_ready=why_not_ready, settling=settling)
        for prefix, route in routes.items():
            before = self.routes.get(prefix)
            if before is None or before.announce != route.announce or before.reason != route.reason:
                log.info("event=vip_%s vip=%s reason=%s", "up" if route.announce else "down", prefix, route.reason)
        self.routes = routes
        if self.speaker is not None:
            await self._apply_routes(routes, errors)
        self.errors = errors

    async def _apply_routes(self, routes: Mapping[desired.Prefix, desired.Route], errors: dict[str, str]) -> None:
        assert self.speaker is not None
        for prefix in list(self.speaker.announced):
            route = routes.get(prefix)
            if route is None or not route.announce:
                try:
                    await self.speaker.withdraw(prefix)
                except bgp.BgpError as error:
                    errors[str(prefix)] = str(error)
                    log.error("event=bgp_withdraw_failed vip=%s error=%s", prefix, error)
        for prefix, route in routes.items():
            if route.announce and self.speaker.announced.get(prefix) != route.attributes:
                try:
                    await self.speaker.announce(prefix, route.attributes)
                except bgp.BgpError as error:
                    errors[str(prefix)] = str(error)
                    log.error("event=bgp_announce_failed vip=%s error=%s", prefix, error)
