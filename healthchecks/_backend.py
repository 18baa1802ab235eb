"""One target at run time: each check run by a task or by the clock's timers, its rise/fall state, and the backend's
ANDed state."""

import asyncio
import logging
import random
import time
from collections.abc import Callable

import config
from healthchecks import _admission, _checker, _clock, _failure, _health, _rise_fall

__all__ = ["Backend"]

log = logging.getLogger(__name__)

_UNKNOWN, _UP, _DOWN = _health.HealthState.UNKNOWN, _health.HealthState.UP, _health.HealthState.DOWN

# How long past its own timeout a checker may run before the scheduler gives up on it: checkers end themselves
# at the timeout, so this only catches a bug, and turns it into a failure instead of a hung check.
_GRACE = 1.0
_NO_CHECKS = "no checks configured"


class _Lane:
    """One check of a backend: its checker, its state machine and its last result.

    A checker with ``start`` runs from the clock's timers instead of a task: ``drive(due)`` arms the next run,
    which waits for admission, starts, and on its verdict arms the one after. The run's state lives here and its
    callbacks are bound once, so a run allocates no closure for the garbage collector to follow (thousands a second,
    each alive for an interval). ``release_run_state()`` breaks the lane's references to itself and its backend.
    """

    __slots__ = (
        "check",
        "label",
        "checker",
        "machine",
        "last_result",
        "task",
        "failing",
        "driving",
        "driven",
        "abandon",
        "epoch",
        "backend",
        "index",
        "due",
        "started",
        "begun",
        "run_epoch",
        "_begin",
        "_admitted",
        "_ended",
    )

    def __init__(
        self,
        check: config.Check,
        label: str,
        checker: _checker.Checker,
        state: _health.HealthState,
        backend: "Backend",
        index: int,
    ) -> None:
        self.check = check
        self.label = label
        self.checker = checker
        self.machine = _rise_fall.RiseFall(check.timing, state)
        self.last_result: _health.CheckResult | None = None
        self.task: asyncio.Task[None] | None = None
        self.failing = False  # the checker raised on its last run: its traceback is logged once, not every run
        # Stopping a timer-driven lane cancels ``driven`` (the next run's timer) and calls ``abandon`` (the run in
        # flight).
        self.driving = False
        self.driven: _clock.Timer | None = None
        self.abandon: Callable[[], None] | None = None
        self.epoch = 0  # moved by stop(): a run still waiting for admission from before then starts nothing
        self.backend: Backend | None = backend
        self.index = index
        self.due = self.started = self.begun = 0.0
        self.run_epoch = 0
        self._begin: Callable[[], None] | None = self.begin
        self._admitted: Callable[[], bool] | None = self.admitted
        self._ended: Callable[[_failure.Verdict], None] | None = self.ended

    def drive(self, due: float) -> None:
        """Run the next check at ``due`` (once admitted) from the clock's timers, and the one after from its
        verdict."""
        backend = self.backend
        if not self.driving or backend is None or self._begin is None:
            return  # stopped, perhaps by a subscriber to the change the last run made
        self.due, self.run_epoch = due, self.epoch
        self.driven = backend._clock.call_at(due, self._begin)

    def begin(self) -> None:
        backend = self.backend
        self.driven = None
        if backend is not None and self._admitted is not None:
            backend._admission.admit(self._admitted)

    def admitted(self) -> bool:
        backend = self.backend
        if self.epoch != self.run_epoch or backend is None or self._ended is None:
            return False  # stopped while it waited for room
        self.started, self.begun = backend._clock.monotonic(), time.perf_counter()
        start = self.checker.start  # a property: read once per run
        assert start is not None
        try:
            self.abandon = start(self._ended)
        except Exception as error:  # a bug in a checker must not stop the checks
            verdict = backend._checker_failed(self, error)
            self.drive(backend._ran(self, *verdict, self.due, self.started, self.begun))
            return False
        return True

    def ended(self, verdict: _failure.Verdict) -> None:
        backend = self.backend
        if self.epoch != self.run_epoch or self.abandon is None or backend is None:
            return  # stopped meanwhile
        self.abandon = None
        self.failing = False
        backend._admission.release()
        self.drive(backend._ran(self, *verdict, self.due, self.started, self.begun))

    def release_run_state(self) -> None:
        """Drop the callbacks bound to this lane and its backend: nothing runs from it any more."""
        self._begin = self._admitted = self._ended = None
        self.backend = None


class Backend:
    """Runs the checks of one ``Target`` and turns their results into ``HealthChange``s through ``publish``."""

    def __init__(
        self,
        target: _health.Target,
        *,
        clock: _clock.Clock,
        admission: _admission.Admission,
        rng: random.Random,
        http_engine: _checker.HttpEngine,
        publish: Callable[[_health.HealthChange], None],
        on_check: Callable[[_health.CheckRun], None] | None,
        initial: _health.HealthState = _UNKNOWN,
    ) -> None:
        self.target = target
        self._clock = clock
        self._admission = admission
        self._rng = rng
        self._http_engine = http_engine
        self._publish = publish
        self._on_check = on_check
        disabled = target.admin is _health.AdminState.DISABLED
        # A known state (kept by the core across a checker process restart) stands until the checks decide.
        self.state = _UNKNOWN if disabled else initial
        self.since = clock.wall()
        self.reason = "not checked yet" if self.state is _UNKNOWN else "state kept from the previous checker"
        self.last_result: _health.CheckResult | None = None
        self._lanes: list[_Lane] = []
        self._build_lanes(self.state)
        if disabled:
            self.reason = f"admin {target.admin.value}"
        elif not self._lanes:
            self._set_state(_UP, _NO_CHECKS)

    def _build_lanes(self, state: _health.HealthState) -> None:
        target = self.target
        for lane in self._lanes:
            lane.release_run_state()
        self._lanes = [
            _Lane(
                check,
                _checker.describe_check(check, target.port),
                _checker.make_checker(
                    check, target.address, target.port, http_engine=self._http_engine, via=target.via
                ),
                state,
                self,
                index,
            )
            for index, check in enumerate(target.checks)
        ]

    # lifecycle

    def start(self) -> None:
        """Start every check (a task each, or the clock's timers), unless the target is disabled."""
        if self.target.admin is _health.AdminState.DISABLED:
            return
        for lane in self._lanes:
            if lane.checker.start is not None:
                if not lane.driving:
                    lane.driving = True
                    lane.drive(self._first_due(lane))
            elif lane.task is None:
                lane.task = asyncio.get_running_loop().create_task(
                    self._run(lane), name=f"healthcheck {self.target.key} {lane.label}"
                )
                lane.task.add_done_callback(self._task_ended)

    def stop(self) -> list[asyncio.Task[None]]:
        """Cancel the check tasks; the returned tasks finish the cancellation and close the checkers."""
        ending = []
        for lane in self._lanes:
            lane.driving = False
            lane.epoch += 1
            if lane.driven is not None:
                lane.driven.cancel()
                lane.driven = None
            if lane.abandon is not None:
                abandon, lane.abandon = lane.abandon, None
                abandon()
                self._admission.release()
            lane.checker.release()
            if lane.task is not None:
                lane.task.cancel()
                ending.append(lane.task)
                lane.task = None
        if not ending:
            return []  # checkers that never ran hold no connection or session
        closing = asyncio.get_running_loop().create_task(
            self._close_checkers(list(self._lanes), ending), name=f"healthcheck close {self.target.key}"
        )
        return [closing]

    def discard(self) -> list[asyncio.Task[None]]:
        """``stop()`` for good: the target is gone, and its lanes let go of this backend."""
        ending = self.stop()
        for lane in self._lanes:
            lane.release_run_state()
        return ending

    async def _close_checkers(self, lanes: list[_Lane], ending: list[asyncio.Task[None]]) -> None:
        await asyncio.gather(*ending, return_exceptions=True)
        for lane in lanes:
            try:
                await lane.checker.close()
            except Exception:
                log.exception("event=checker_close_failed backend=%s check=%s", self.target.key, lane.label)

    def replace(self, target: _health.Target, *, started: bool) -> list[asyncio.Task[None]]:
        """Take a new spec for the same key: restart the checks only if they changed, keep the state."""
        old, self.target = self.target, target
        disabled = target.admin is _health.AdminState.DISABLED
        before, after = (
            (old.address, old.port, old.checks, old.via),
            (target.address, target.port, target.checks, target.via),
        )
        checks_changed = before != after
        admin_changed = old.admin is not target.admin
        ending: list[asyncio.Task[None]] = []
        if checks_changed or (disabled and admin_changed):
            ending = self.stop()
        reason = f"admin {target.admin.value}"
        if disabled:
            if checks_changed or admin_changed:
                self._build_lanes(_UNKNOWN)
            if admin_changed:
                self._set_state(_UNKNOWN, reason)
        elif admin_changed and old.admin is _health.AdminState.DISABLED:
            self._build_lanes(_UNKNOWN)
            self._set_state(_UNKNOWN if self._lanes else _UP, reason, force=True)
        else:
            if checks_changed:
                # The new checks start from the backend's state, so a reload neither drops nor admits it by itself.
                self._build_lanes(self.state)
            if admin_changed:
                self._set_state(self.state, reason, force=True)
            if not self._lanes:
                self._set_state(_UP, _NO_CHECKS)
        if started:
            self.start()
        return ending

    def _task_ended(self, task: "asyncio.Task[None]") -> None:
        if task.cancelled():
            return
        error = task.exception()
        log.error("event=healthcheck_task_ended backend=%s task=%s error=%r", self.target.key, task.get_name(), error)

    # checking

    def _first_due(self, lane: _Lane) -> float:
        timing = lane.check.timing
        return self._clock.monotonic() + self._rng.uniform(0.0, timing.jitter * lane.machine.next_interval())

    async def _run(self, lane: _Lane) -> None:
        clock = self._clock
        due = self._first_due(lane)
        limit = lane.check.timing.timeout + _GRACE
        while True:
            await clock.sleep_until(due)
            try:
                async with self._admission.turn():
                    started = clock.monotonic()
                    begun = time.perf_counter()
                    async with asyncio.timeout(limit):
                        ok, reason = await lane.checker.run()
            except TimeoutError:
                ok, reason = False, f"check did not end within {limit:g}s"
                log.error("event=checker_hung backend=%s check=%s", self.target.key, lane.label)
            except Exception as error:  # a bug in a checker must not stop the checks
                ok, reason = self._checker_failed(lane, error)
            else:
                lane.failing = False
            if lane.task is not asyncio.current_task():
                # stop() cancelled this task, but a library turned the cancellation into a result (aiohttp's
                # timeout does, often, when the two race): end here rather than check on, unstoppable.
                return
            due = self._ran(lane, ok, reason, due, started, begun)

    def _checker_failed(self, lane: _Lane, error: Exception) -> _failure.Verdict:
        if not lane.failing:
            log.exception("event=checker_failed backend=%s check=%s", self.target.key, lane.label)
            lane.failing = True
        return False, f"internal error: {type(error).__name__}: {error}"

    def _ran(self, lane: _Lane, ok: bool, reason: str, due: float, started: float, begun: float) -> float:
        """Record a finished run; returns when the next one is due."""
        clock = self._clock
        result = _health.CheckResult(ok, reason, time.perf_counter() - begun, clock.wall())
        self._record(lane, result)
        if self._on_check is not None:
            try:
                self._on_check(_health.CheckRun(self.target.key, lane.index, result, started - due))
            except Exception:
                log.exception("event=on_check_failed backend=%s", self.target.key)
        return max(started + lane.machine.next_interval(), clock.monotonic())

    def _record(self, lane: _Lane, result: _health.CheckResult) -> None:
        lane.last_result = result
        self.last_result = result
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "event=check_result backend=%s check=%s ok=%s reason=%r duration=%.4f",
                self.target.key, lane.label, result.ok, result.reason, result.duration,
            )  # fmt: skip
        if not lane.machine.feed(result.ok):
            return
        states = [s.machine.state for s in self._lanes]
        if _DOWN in states:
            new = _DOWN
        elif _UNKNOWN in states:
            new = _UNKNOWN
        else:
            new = _UP
        if new is self.state:
            return
        if new is _DOWN:
            reason = f"{lane.label}: {result.reason}"
        else:
            reason = "; ".join(f"{s.label}: {s.last_result.reason}" for s in self._lanes if s.last_result)
        self._set_state(new, reason)

    def _set_state(self, new: _health.HealthState, reason: str, *, force: bool = False) -> None:
        old = self.state
        if new is old and not force:
            return
        now = self._clock.wall()
        self.state, self.reason = new, reason
        if new is not old:
            self.since = now
            # DEBUG: the core logs each change it receives, with its context (``event=backend_health``): one line.
            log.debug("event=backend_%s backend=%s old=%s reason=%r", new.value, self.target.key, old.value, reason)
        else:
            log.info("event=backend_admin backend=%s admin=%s", self.target.key, self.target.admin.value)
        self._publish(_health.HealthChange(self.target.key, old, new, reason, now, self.target.admin))

    def snapshot(self) -> _health.BackendHealth:
        """The backend's health as the core sees it."""
        return _health.BackendHealth(
            state=self.state,
            since=self.since,
            reason=self.reason,
            last_result=self.last_result,
            admin=self.target.admin,
            checks=tuple(_health.CheckHealth(s.check, s.machine.state, s.last_result) for s in self._lanes),
        )
