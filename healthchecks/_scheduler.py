"""The scheduler: runs every target's checks on their own timers and reports health changes to the core."""

import asyncio
import logging
import random
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Self

from healthchecks import _admission, _backend, _checker, _clock, _errors, _events, _health

__all__ = ["Scheduler", "unique_targets", "verify_targets"]

log = logging.getLogger(__name__)

# How long stop() waits for check tasks to end and connections to close before it gives up on them.
_STOP_GRACE = 10.0


class Scheduler:
    """Checks a changing set of targets; ``update`` applies the wanted set as a diff.

    Typical use by the core::

        async with healthchecks.Scheduler() as scheduler:
            changes = scheduler.events()
            scheduler.update(targets)
            async for change in changes:
                ...  # change.key, change.old, change.new, change.reason

    ``update`` may be called before ``start`` (nothing runs until then) and any time after, until ``stop``.
    A new key starts checking, a missing key stops (with a last change to ``UNKNOWN``, reason ``"removed"``), a
    key whose address, port or checks changed restarts its checks keeping its state, an admin-only change keeps
    the checks running. Other keys are not touched: their state and timers carry on.

    ``clock`` drives the timers (``ManualClock`` in tests); ``on_check`` sees every finished run (for metrics);
    ``seed`` makes the start offsets reproducible; ``http_engine`` picks the HTTP client; at most
    ``max_in_flight`` checks run at once, the others wait their turn (``_admission``).
    """

    def __init__(
        self,
        *,
        clock: _clock.Clock | None = None,
        http_engine: _checker.HttpEngine = "lean",
        on_check: Callable[[_health.CheckRun], None] | None = None,
        seed: int | None = None,
        max_in_flight: int = _admission.MAX_IN_FLIGHT,
    ) -> None:
        self._clock: _clock.Clock = clock or _clock.LoopClock()
        self._admission = _admission.Admission(max_in_flight)
        self._http_engine: _checker.HttpEngine = http_engine
        self._on_check = on_check
        self._rng = random.Random(seed)
        self._backends: dict[str, _backend.Backend] = {}
        self._hub = _events.EventHub()
        self._ending: set[asyncio.Task[None]] = set()
        self._started = False
        self._stopped = False

    # lifecycle

    def start(self) -> None:
        """Start checking (inside a running event loop)."""
        if self._stopped:
            raise _errors.SchedulerStateError("the scheduler was stopped; make a new one")
        if self._started:
            raise _errors.SchedulerStateError("the scheduler is already started")
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise _errors.SchedulerStateError("start() must be called inside a running event loop") from None
        self._started = True
        for backend in self._backends.values():
            backend.start()
        log.info("event=healthchecks_started targets=%d engine=%s", len(self._backends), self._http_engine)

    async def stop(self) -> None:
        """Stop every check, close every connection and end the event streams. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        for backend in self._backends.values():
            self._ending.update(backend.discard())
        if self._ending:
            _, hung = await asyncio.wait(self._ending, timeout=_STOP_GRACE)
            for task in hung:
                log.error("event=healthcheck_stop_hung task=%s grace=%gs", task.get_name(), _STOP_GRACE)
                task.cancel()
        self._ending.clear()
        self._hub.close()
        log.info("event=healthchecks_stopped targets=%d", len(self._backends))

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: types.TracebackType | None
    ) -> None:
        await self.stop()

    # the wanted set

    def update(
        self, targets: Iterable[_health.Target], *, initial: Mapping[str, _health.HealthState] | None = None
    ) -> None:
        """Make the checked set equal to ``targets`` (see the class docstring for what changes).

        ``initial`` gives a new key the state it starts from instead of ``UNKNOWN`` (no change is published for
        it): the state a previous checker had reached, which then stands until the checks decide.
        """
        if self._stopped:
            raise _errors.SchedulerStateError("update() after stop()")
        wanted = unique_targets(targets)
        verify_targets(wanted.values(), self._running_target, self._http_engine)  # fail before changing anything
        for key in [key for key in self._backends if key not in wanted]:
            backend = self._backends.pop(key)
            self._keep(backend.discard())
            self._hub.publish(
                _health.HealthChange(key, backend.state, _health.HealthState.UNKNOWN, "removed", self._clock.wall(),
                                     backend.target.admin)
            )  # fmt: skip
            log.info("event=target_removed backend=%s", key)
        for key, target in wanted.items():
            existing = self._backends.get(key)
            if existing is None:
                backend = _backend.Backend(
                    target,
                    clock=self._clock,
                    admission=self._admission,
                    rng=self._rng,
                    http_engine=self._http_engine,
                    publish=self._hub.publish,
                    on_check=self._on_check,
                    initial=(initial or {}).get(key, _health.HealthState.UNKNOWN),
                )
                self._backends[key] = backend
                if self._started:
                    backend.start()
            elif existing.target != target:
                self._keep(existing.replace(target, started=self._started))

    def _running_target(self, key: str) -> _health.Target | None:
        backend = self._backends.get(key)
        return None if backend is None else backend.target

    def _keep(self, tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            self._ending.add(task)
            task.add_done_callback(self._ending.discard)

    # what the core reads

    def states(self) -> Mapping[str, _health.BackendHealth]:
        """A snapshot of every target's health, by key."""
        return types.MappingProxyType({key: backend.snapshot() for key, backend in self._backends.items()})

    def events(self) -> _events.EventStream:
        """An async iterator of every change from now on, in order; it ends when the scheduler stops."""
        return self._hub.stream()

    def subscribe(self, callback: Callable[[_health.HealthChange], None]) -> Callable[[], None]:
        """Call ``callback`` with every change from now on (synchronously); returns a function that unsubscribes."""
        return self._hub.subscribe(callback)


def unique_targets(targets: Iterable[_health.Target]) -> dict[str, _health.Target]:
    """``targets`` by key; ValueError on a duplicate key."""
    wanted: dict[str, _health.Target] = {}
    for target in targets:
        if target.key in wanted:
            raise ValueError(f"duplicate target key {target.key!r}")
        wanted[target.key] = target
    return wanted


def verify_targets(
    targets: Iterable[_health.Target],
    current: Callable[[str], _health.Target | None],
    http_engine: _checker.HttpEngine,
) -> None:
    """Build a checker for every check that is new or changed (``current`` gives a key's running target).

    HealthCheckConfigError if one cannot be sent.
    """
    for target in targets:
        existing = current(target.key)
        if existing is None or existing.checks != target.checks or existing.via != target.via:
            for check in target.checks:
                _checker.make_checker(check, target.address, target.port, http_engine=http_engine, via=target.via)
