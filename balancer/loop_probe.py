"""A probe of event-loop stalls: a task that sleeps a short interval and records how late it woke.

Anything that runs on the loop without awaiting (a big snapshot, a JSON dump, a table build) delays every other
task by as long; the probe sees the delay as lateness of its own wake-up. It keeps the largest since start and a
histogram of all of them, which ``balancer.metrics`` exports as ``xdplb_event_loop_stall_seconds_max`` and
``xdplb_event_loop_stall_seconds``::

    probe = loop_probe.LoopProbe()
    probe.start()                 # in the running loop
    ...
    probe.read().max              # seconds: the longest stall seen
    await probe.stop()
"""

import asyncio
import bisect
import dataclasses
import logging
import time
from collections.abc import Callable

import config

__all__ = ["STALL_BUCKETS", "LoopProbe", "LoopProbeError", "Stalls"]

log = logging.getLogger(__name__)

STALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Seconds: a healthy loop wakes the probe within a millisecond or two; the issue's budget is 20 ms per stall."""


class LoopProbeError(config.XdplbError, RuntimeError):
    """The probe was started twice, or outside a running loop."""


@dataclasses.dataclass(frozen=True)
class Stalls:
    """What the probe has seen: ``counts`` per bucket of ``STALL_BUCKETS`` (not cumulative, +Inf last)."""

    max: float
    counts: tuple[int, ...]
    sum: float


class LoopProbe:
    """Sleeps ``interval`` seconds in a loop and records each wake-up's lateness (a stall of the loop).

    A stall of at least ``log_above`` seconds is logged (``event=loop_stall``), at most once per ``log_every``.
    """

    def __init__(
        self,
        *,
        interval: float = 0.01,
        log_above: float = 0.25,
        log_every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self._log_above = log_above
        self._log_every = log_every
        self._clock = clock
        self._max = 0.0
        self._counts = [0] * (len(STALL_BUCKETS) + 1)
        self._sum = 0.0
        self._logged_at: float | None = None
        self._unlogged = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start probing the running loop (call it from a coroutine or callback on that loop)."""
        if self._task is not None:
            raise LoopProbeError("the loop probe is already running; stop() it first")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise LoopProbeError("start() needs a running event loop") from None
        self._task = loop.create_task(self._run(), name="xdplb-loop-probe")
        self._task.add_done_callback(_report_end)

    async def stop(self) -> None:
        """Stop probing; idempotent. What was recorded stays readable."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait([task])  # the probe's own CancelledError stays in the task; ours would propagate

    @property
    def running(self) -> bool:
        """Whether the probe's task is alive."""
        return self._task is not None and not self._task.done()

    def observe(self, seconds: float) -> None:
        """Record one wake-up that came ``seconds`` late (the probe's task calls this; tests may too)."""
        seconds = max(0.0, seconds)
        self._counts[bisect.bisect_left(STALL_BUCKETS, seconds)] += 1
        self._sum += seconds
        if seconds > self._max:
            self._max = seconds
        if seconds >= self._log_above:
            self._log(seconds)

    def read(self) -> Stalls:
        """A copy of what was recorded so far."""
        return Stalls(max=self._max, counts=tuple(self._counts), sum=self._sum)

    def _log(self, seconds: float) -> None:
        now = self._clock()
        if self._logged_at is not None and now - self._logged_at < self._log_every:
            self._unlogged += 1
            return
        log.warning(
            "event=loop_stall seconds=%.3f max_seconds=%.3f unlogged_stalls=%d", seconds, self._max, self._unlogged
        )
        self._logged_at, self._unlogged = now, 0

    async def _run(self) -> None:
        """Forever: sleep, then record how much later than due the loop ran us."""
        clock, interval = self._clock, self.interval
        due = clock() + interval
        while True:
            await asyncio.sleep(interval)
            now = clock()
            self.observe(now - due)
            due = now + interval


def _report_end(task: "asyncio.Task[None]") -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("event=loop_probe_failed error=%r", task.exception())
