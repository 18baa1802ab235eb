"""Where the scheduler gets its time from: the event loop's clock, or a manual one that tests move by hand."""

import asyncio
import functools
import heapq
import logging
import itertools
import math
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Clock", "LoopClock", "ManualClock", "Timer"]


log = logging.getLogger(__name__)

_LOG_EVERY = 10.0  # seconds between two "checks held back" lines while the loop stays behind


class Timer:
    """A callback due at a time on a clock; ``cancel()`` before then and it never runs."""

    __slots__ = ("callback", "pending")

    def __init__(self, callback: Callable[[], object]) -> None:
        self.callback = callback
        self.pending = True

    def cancel(self) -> None:
        self.pending = False

    def fire(self) -> None:
        if self.pending:
            self.pending = False
            self.callback()


class Clock(Protocol):
    """Time source of the scheduler. ``monotonic`` drives timers; ``wall`` stamps results and changes."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""

    def wall(self) -> float:
        """Seconds since the epoch."""

    async def sleep_until(self, deadline: float) -> None:
        """Return once ``monotonic()`` has reached ``deadline``."""

    def call_at(self, deadline: float, callback: Callable[[], object]) -> Timer:
        """Run ``callback`` (from the loop, never from here) once ``monotonic()`` has reached ``deadline``."""


class LoopClock:
    """The running event loop's clock (the default), waking sleepers together on ticks of ``tick`` seconds.

    Deadlines are rounded up to the next tick, so that thousands of checks a second start a few dozen at a time:
    one timer and one loop wake-up per tick instead of one per check, and their sockets become ready together.

    Paced: a tick that wakes more than ``behind`` seconds late finds the loop behind its work, and starting more
    checks then would only delay the answers of those in flight past their timeouts (an overloaded checker that
    starts everything on time fails everything). Its sleepers move to the next tick instead, until the loop has
    caught up or they have waited ``max_wait`` seconds past their tick. Checks then run late (the scheduling
    lag shows it), and their verdicts stay true.
    """

    def __init__(self, *, tick: float = 0.01, behind: float = 0.05, max_wait: float = 5.0) -> None:
        self._tick = tick
        self._behind = behind
        self._max_wait = max_wait
        self._due: dict[int, list[Timer]] = {}
        self._held: list[tuple[int, Timer]] = []  # moved by pacing, each with the tick it was first due at
        self.held_total = 0
        self._logged_at = -math.inf
        self._unlogged = 0  # held since the last log line: one line at most every _LOG_EVERY seconds

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    def wall(self) -> float:
        return time.time()

    async def sleep_until(self, deadline: float) -> None:
        # Through a tick even when the deadline has passed: a check that ran as long as its interval starts again
        # right away, and that start is paced like any other.
        await _timer_wait(self, deadline)

    def call_at(self, deadline: float, callback: Callable[[], object]) -> Timer:
        timer = Timer(callback)
        self._add(math.ceil(deadline / self._tick), timer)
        return timer

    def _add(self, tick: int, timer: Timer) -> None:
        due = self._due.get(tick)
        if due is None:
            due = self._due[tick] = []
            asyncio.get_running_loop().call_at(tick * self._tick, self._wake, tick)
        due.append(timer)

    def _wake(self, tick: int) -> None:
        timers = self._due.pop(tick, [])
        held, self._held = self._held, []
        now = asyncio.get_running_loop().time()
        if now - tick * self._tick > self._behind:
            self._hold(tick, now, held, timers)
            return
        for _, timer in held:
            self._fire(timer)
        for timer in timers:
            self._fire(timer)

    def _hold(self, tick: int, now: float, held: list[tuple[int, Timer]], timers: list[Timer]) -> None:
        """Move the sleepers of a late tick (and those held before) to the next tick, but none past ``max_wait``."""
        late = [(first, timer) for first, timer in held if timer.pending] + [(tick, t) for t in timers if t.pending]
        if not late:
            return
        newly = sum(1 for first, _ in late if first == tick)
        self.held_total += newly
        self._unlogged += newly
        if now - self._logged_at >= _LOG_EVERY:
            log.warning(
                "event=healthchecks_behind late_ms=%.0f held=%d waiting=%d",
                (now - tick * self._tick) * 1000, self._unlogged, len(late),
            )  # fmt: skip
            self._logged_at, self._unlogged = now, 0
        oldest = now - self._max_wait
        for first, timer in late:
            if first * self._tick <= oldest:
                self._fire(timer)
            else:
                self._held.append((first, timer))
        if self._held:
            next_tick = math.floor(now / self._tick) + 1
            if next_tick not in self._due:
                self._due[next_tick] = []
                asyncio.get_running_loop().call_at(next_tick * self._tick, self._wake, next_tick)

    @staticmethod
    def _fire(timer: Timer) -> None:
        try:
            timer.fire()
        except Exception:
            log.exception("event=timer_callback_failed")


async def _timer_wait(clock: Clock, deadline: float) -> None:
    """Sleep on one of ``clock``'s timers."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    timer = clock.call_at(deadline, functools.partial(_resolve, future))
    try:
        await future
    finally:
        timer.cancel()


def _resolve(future: "asyncio.Future[None]") -> None:
    if not future.done():
        future.set_result(None)


class ManualClock:
    """A clock that moves only when told to, for tests of timing (rise, fall, intervals) without real sleeps.

    >>> clock = ManualClock(start=100.0)
    >>> clock.advance(2.5)
    >>> clock.monotonic()
    102.5
    """

    def __init__(self, *, start: float = 1000.0, wall_offset: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_offset
        self._sleepers: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._wall_offset + self._now

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        await _timer_wait(self, deadline)

    def call_at(self, deadline: float, callback: Callable[[], object]) -> Timer:
        timer = Timer(callback)
        if deadline <= self._now:
            asyncio.get_running_loop().call_soon(timer.fire)
        else:
            heapq.heappush(self._sleepers, (deadline, next(self._order), timer))
        return timer

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has come, earliest first."""
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go back")
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, timer = heapq.heappop(self._sleepers)
            if timer.pending:
                asyncio.get_running_loop().call_soon(timer.fire)

    def sleeping(self) -> int:
        """How many tasks are asleep on this clock."""
        return sum(1 for _, _, timer in self._sleepers if timer.pending)

    def next_deadline(self) -> float | None:
        """The earliest deadline anyone sleeps until, or None."""
        while self._sleepers and not self._sleepers[0][2].pending:
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None
