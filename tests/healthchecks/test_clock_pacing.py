"""LoopClock's pacing: a tick that wakes while the loop is behind its work holds its checks back, within bounds."""

import asyncio
import functools
import logging
import time

import pytest

from healthchecks import _clock


def _block(seconds: float) -> None:
    time.sleep(seconds)  # the loop's thread busy, as under a burst of check work


async def test_a_late_tick_holds_its_sleepers_until_the_loop_has_caught_up(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    clock = _clock.LoopClock(tick=0.01, behind=0.05, max_wait=5.0)
    fired: list[float] = []
    start = loop.time()
    clock.call_at(start + 0.02, lambda: fired.append(loop.time()))
    loop.call_soon(_block, 0.2)
    with caplog.at_level(logging.WARNING, logger="healthchecks._clock"):
        await asyncio.sleep(0.4)
    assert clock.held_total == 1
    assert len(fired) == 1, "held, then run once the loop was on time again"
    assert "event=healthchecks_behind" in caplog.text


async def test_an_on_time_loop_holds_nothing() -> None:
    loop = asyncio.get_running_loop()
    clock = _clock.LoopClock(tick=0.01, behind=0.05)
    fired: list[int] = []
    for i in range(20):
        clock.call_at(loop.time() + 0.01 * (i % 5), functools.partial(fired.append, i))
    await asyncio.sleep(0.2)
    assert (sorted(fired), clock.held_total) == (list(range(20)), 0)


async def test_a_loop_that_never_catches_up_still_runs_its_checks_after_max_wait() -> None:
    loop = asyncio.get_running_loop()
    clock = _clock.LoopClock(tick=0.01, behind=0.02, max_wait=0.2)
    fired: list[float] = []
    start = loop.time()
    clock.call_at(start + 0.01, lambda: fired.append(time.monotonic()))
    began = time.monotonic()
    # Between two ticks the loop is always blocked for longer than `behind`: no tick is ever on time.
    while time.monotonic() < began + 1.0 and not fired:
        loop.call_soon(_block, 0.08)
        await asyncio.sleep(0)
    assert clock.held_total >= 1
    assert fired and fired[0] - began < 0.6, "run within max_wait and a few blocks, not held for ever"


async def test_a_due_deadline_still_goes_through_a_paced_tick() -> None:
    loop = asyncio.get_running_loop()
    clock = _clock.LoopClock(tick=0.01, behind=0.05)
    due = loop.time()
    _block(0.1)  # the check ran as long as its interval: its next run is already due, and the loop is behind
    await clock.sleep_until(due)
    assert clock.held_total == 1
