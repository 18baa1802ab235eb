"""Where the scheduler gets its time from: the event loop's clock, or a manual one that tests move by hand."""

import asyncio
import heapq
import itertools
import math
import time
from typing import Protocol

__all__ = ["Clock", "LoopClock", "ManualClock"]


class Clock(Protocol):
    """Time source of the scheduler. ``monotonic`` drives timers; ``wall`` stamps results and changes."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""

    def wall(self) -> float:
        """Seconds since the epoch."""

    async def sleep_until(self, deadline: float) -> None:
        """Return once ``monotonic()`` has reached ``deadline``."""


class LoopClock:
    """The running event loop's clock (the default), waking sleepers together on ticks of ``tick`` seconds.

    Deadlines are rounded up to the next tick, so that thousands of checks a second start a few dozen at a time:
    one timer and one loop wake-up per tick instead of one per check, and their sockets become ready together.
    """

    def __init__(self, *, tick: float = 0.01) -> None:
        self._tick = tick
        self._sleepers: dict[int, list[asyncio.Future[None]]] = {}

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    def wall(self) -> float:
        return time.time()

    async def sleep_until(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        if deadline <= loop.time():
            return
        tick = math.ceil(deadline / self._tick)
        future = loop.create_future()
        sleepers = self._sleepers.get(tick)
        if sleepers is None:
            sleepers = self._sleepers[tick] = []
            loop.call_at(tick * self._tick, self._wake, tick)
        sleepers.append(future)
        await future

    def _wake(self, tick: int) -> None:
        for future in self._sleepers.pop(tick, ()):
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
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._wall_offset + self._now

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._order), future))
        await future

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has come, earliest first."""
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go back")
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    def sleeping(self) -> int:
        """How many tasks are asleep on this clock."""
        return sum(1 for _, _, future in self._sleepers if not future.done())

    def next_deadline(self) -> float | None:
        """The earliest deadline anyone sleeps until, or None."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None
