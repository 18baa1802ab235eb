"""The loop probe sees a loop that is kept busy without awaiting, and only then says so in the log."""

import asyncio
import logging
import time

import pytest

from balancer import loop_probe


async def test_a_blocking_call_on_the_loop_is_seen_as_a_stall() -> None:
    probe = loop_probe.LoopProbe(interval=0.01)
    probe.start()
    await asyncio.sleep(0.05)
    time.sleep(0.2)  # what a big snapshot built on the loop does to everyone else
    await asyncio.sleep(0.05)
    await probe.stop()
    seen = probe.read()
    assert 0.18 <= seen.max < 1.0
    assert sum(seen.counts[loop_probe.STALL_BUCKETS.index(0.1) + 1 :]) >= 1  # in the 0.25 s bucket or above
    assert seen.sum >= 0.18
    assert sum(seen.counts) >= 5  # it kept waking up around the stall


async def test_the_maximum_is_kept_since_start() -> None:
    probe = loop_probe.LoopProbe(interval=0.005)
    probe.start()
    await asyncio.sleep(0.02)
    time.sleep(0.1)
    await asyncio.sleep(0.1)  # plenty of small wake-ups after the big one
    assert probe.read().max >= 0.08
    await probe.stop()


def test_observations_land_in_their_bucket() -> None:
    probe = loop_probe.LoopProbe()
    probe.observe(0.003)
    probe.observe(0.003)
    probe.observe(7.0)
    probe.observe(-0.0001)  # woken a hair early: no stall
    seen = probe.read()
    assert seen.counts[loop_probe.STALL_BUCKETS.index(0.005)] == 2
    assert seen.counts[-1] == 1 and seen.counts[0] == 1
    assert (seen.max, seen.sum) == (7.0, pytest.approx(7.006))  # type: ignore[comparison-overlap]  # mypy misses approx's __eq__ in a tuple


async def test_lifecycle_order_and_idempotent_stop() -> None:
    probe = loop_probe.LoopProbe()
    await probe.stop()  # never started: fine
    probe.start()
    assert probe.running
    with pytest.raises(loop_probe.LoopProbeError, match="already running"):
        probe.start()
    await probe.stop()
    await probe.stop()
    assert not probe.running
    probe.start()  # type: ignore[unreachable]  # again after a stop (mypy keeps `running` at the True asserted above)
    await probe.stop()


def test_start_needs_a_running_loop() -> None:
    with pytest.raises(loop_probe.LoopProbeError, match="running event loop"):
        loop_probe.LoopProbe().start()


def test_long_stalls_are_logged_at_most_once_per_period(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    probe = loop_probe.LoopProbe(log_above=0.25, log_every=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="balancer.loop_probe"):
        probe.observe(0.1)  # under the threshold
        probe.observe(0.3)
        now[0] += 10
        probe.observe(0.5)  # within the period: counted, not logged
        now[0] += 60
        probe.observe(0.4)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "event=loop_stall seconds=0.300 max_seconds=0.300 unlogged_stalls=0",
        "event=loop_stall seconds=0.400 max_seconds=0.500 unlogged_stalls=1",
    ]
