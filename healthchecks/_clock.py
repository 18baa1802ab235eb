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
    """

    def __init__(self, *, tick: float = 0.01) -> None:
        self._tick = tick
        self._due: dict[int, list[Timer]] = {}

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    def wall(self) -> float:
        return time.time()

    async def sleep_until(self, deadline: float) -> None:
        if deadline > asyncio.get_running_loop().time():
            await _timer_wait(self, deadline)

    def call_at(self, deadline: float, callback: Callable[[], object]) -> Timer:
        timer = Timer(callback)
        tick = math.ceil(deadline / self._tick)
        due = self._due.get(tick)
        if due is None:
            due = self._due[tick] = []
            asyncio.get_running_loop().call_at(tick * self._tick, self._wake, tick)
        due.append(timer)
        return timer

    def _wake(self, tick: int) -> None:
        for timer in self._due.pop(tick, ()):
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
