"""Checks in worker processes: the same verdicts as in-process, and a crashed checker changes no backend's state."""

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest

import config
import healthchecks
from healthchecks import _worker
from tests.healthchecks import hc_servers

UP, DOWN, UNKNOWN = healthchecks.HealthState.UP, healthchecks.HealthState.DOWN, healthchecks.HealthState.UNKNOWN
FAST = {"interval": 0.2, "rise": 1, "fall": 2, "timeout": 0.1, "jitter": 0}


def target(key: str, port: int, *, path: str = "/", **timing: Any) -> healthchecks.Target:
    check = config.HttpCheck.model_validate({"path": path, "timing": {**FAST, **timing}})
    return healthchecks.Target(key=key, address=hc_servers.LOOPBACK, port=port, checks=(check,))


class Recorder:
    """Every change and every run, with a way to wait for a condition on them."""

    def __init__(self) -> None:
        self.changes: list[healthchecks.HealthChange] = []
        self.runs: list[healthchecks.CheckRun] = []
        self.state: dict[str, healthchecks.HealthState] = {}
        self._moved = asyncio.Event()

    def change(self, change: healthchecks.HealthChange) -> None:
        self.changes.append(change)
        self.state[change.key] = change.new
        self._moved.set()

    def run(self, run: healthchecks.CheckRun) -> None:
        self.runs.append(run)
        self._moved.set()

    async def until(self, condition: Any, timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self._moved.clear()
                await self._moved.wait()


@pytest.fixture
async def pool() -> AsyncIterator[tuple[healthchecks.ProcessScheduler, Recorder]]:
    recorder = Recorder()
    scheduler = healthchecks.ProcessScheduler(workers=2, on_check=recorder.run)
    scheduler.subscribe(recorder.change)
    yield scheduler, recorder
    await scheduler.stop()


async def test_targets_are_checked_in_the_workers_and_report_back(pool: Any, flip_server: Any) -> None:
    scheduler, recorder = pool
    keys = [f"web/{n}" for n in range(8)]
    scheduler.update([target(key, flip_server.port) for key in keys])
    scheduler.start()
    await recorder.until(lambda: all(recorder.state.get(key) is UP for key in keys))
    assert {run.key for run in recorder.runs} == set(keys)
    assert all(run.result.ok and run.lag >= 0 and run.result.duration > 0 for run in recorder.runs)

    flip_server.status = 503
    await recorder.until(lambda: all(recorder.state.get(key) is DOWN for key in keys))
    down = [change for change in recorder.changes if change.new is DOWN]
    assert {change.key for change in down} == set(keys) and "status 503" in down[0].reason


async def test_update_sends_the_difference_and_a_removed_target_reports_removed(pool: Any, flip_server: Any) -> None:
    scheduler, recorder = pool
    scheduler.start()
    scheduler.update([target("web/a", flip_server.port), target("web/b", flip_server.port)])
    await recorder.until(lambda: recorder.state.get("web/a") is UP and recorder.state.get("web/b") is UP)

    # b's check changes to a path that fails: it keeps UP until the new check has decided (fall 2), then goes down.
    scheduler.update([target("web/a", flip_server.port), target("web/b", 1, timeout=0.1)])
    await recorder.until(lambda: recorder.state.get("web/b") is DOWN)
    b_changes = [(c.old, c.new) for c in recorder.changes if c.key == "web/b"]
    assert b_changes == [(UNKNOWN, UP), (UP, DOWN)], "a check change must not pass through unknown"

    scheduler.update([target("web/b", 1)])
    await recorder.until(lambda: recorder.state.get("web/a") is UNKNOWN)
    assert [c.reason for c in recorder.changes if c.key == "web/a"][-1] == "removed"


async def test_change_touches_only_what_it_names(pool: Any, flip_server: Any) -> None:
    scheduler, recorder = pool
    scheduler.start()
    scheduler.update([target("web/a", flip_server.port), target("web/b", flip_server.port)])
    await recorder.until(lambda: recorder.state.get("web/a") is UP and recorder.state.get("web/b") is UP)

    scheduler.change([target("web/c", flip_server.port), target("web/b", 1, timeout=0.1)], ["web/a", "web/zz"])
    await recorder.until(lambda: recorder.state.get("web/c") is UP and recorder.state.get("web/b") is DOWN)
    await recorder.until(lambda: recorder.state.get("web/a") is UNKNOWN)
    assert [c.reason for c in recorder.changes if c.key == "web/a"][-1] == "removed"
    assert [(c.old, c.new) for c in recorder.changes if c.key == "web/b"] == [(UNKNOWN, UP), (UP, DOWN)]
    assert set(scheduler._states) == {"web/b", "web/c"}  # noqa: SLF001

    scheduler.change([], [])  # nothing named: nothing changes
    scheduler.change([target("web/b", flip_server.port)], ["web/b"])  # put wins over remove
    await recorder.until(lambda: recorder.state.get("web/b") is UP)
    assert set(scheduler._states) == {"web/b", "web/c"}  # noqa: SLF001
    bad = config.HttpCheck.model_construct(headers={"X": "a\nb"}, timing=config.CheckTiming.model_validate(FAST))
    broken = healthchecks.Target(key="web/z", address=hc_servers.LOOPBACK, port=flip_server.port, checks=(bad,))
    with pytest.raises(healthchecks.HealthCheckConfigError):
        scheduler.change([broken], ["web/c"])
    assert set(scheduler._states) == {"web/b", "web/c"}, "a refused change removes nothing either"  # noqa: SLF001


async def test_a_check_that_cannot_be_sent_is_refused_before_anything_changes(pool: Any, flip_server: Any) -> None:
    scheduler, recorder = pool
    scheduler.start()
    scheduler.update([target("web/a", flip_server.port)])
    await recorder.until(lambda: recorder.state.get("web/a") is UP)
    bad = config.HttpCheck.model_construct(headers={"X": "a\nb"}, timing=config.CheckTiming.model_validate(FAST))
    broken = healthchecks.Target(key="web/z", address=hc_servers.LOOPBACK, port=flip_server.port, checks=(bad,))
    with pytest.raises(healthchecks.HealthCheckConfigError):
        scheduler.update([broken])
    await asyncio.sleep(0.5)
    assert recorder.state == {"web/a": UP}, "a refused update must not remove web/a"


async def test_a_killed_worker_is_restarted_and_its_backends_keep_their_state(pool: Any, flip_server: Any) -> None:
    scheduler, recorder = pool
    keys = [f"web/{n}" for n in range(8)]
    scheduler.update([target(key, flip_server.port, rise=2, fall=2) for key in keys])
    scheduler.start()
    await recorder.until(lambda: all(recorder.state.get(key) is UP for key in keys))
    settled = len(recorder.changes)

    os.kill(scheduler.worker_pids()[0], signal.SIGKILL)
    await recorder.until(lambda: scheduler.restarts == 1)
    ran_before = len(recorder.runs)
    await recorder.until(lambda: len(recorder.runs) >= ran_before + 3 * len(keys))  # every key checked again
    assert recorder.changes[settled:] == [], "a checker crash must not change any backend's state"
    assert {run.key for run in recorder.runs[ran_before:]} == set(keys)

    flip_server.status = 503  # and the restarted checker still decides
    await recorder.until(lambda: all(recorder.state.get(key) is DOWN for key in keys))


async def test_stop_ends_every_checker_process(flip_server: Any) -> None:
    scheduler = healthchecks.ProcessScheduler(workers=2)
    scheduler.update([target("web/a", flip_server.port)])
    scheduler.start()
    async with asyncio.timeout(15):
        while len(scheduler.worker_pids()) < 2:
            await asyncio.sleep(0.05)
    pids = scheduler.worker_pids()
    events = scheduler.events()
    await scheduler.stop()
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}"), f"checker {pid} outlived stop()"
    assert [change async for change in events] == []
    with pytest.raises(healthchecks.SchedulerStateError):
        scheduler.update([])


async def test_checkers_run_at_a_lower_priority_than_the_core(flip_server: Any) -> None:
    scheduler = healthchecks.ProcessScheduler(workers=1)
    scheduler.update([target("web/a", flip_server.port)])
    events = scheduler.events()
    async with scheduler:
        async with asyncio.timeout(15):
            await anext(aiter(events))  # the checker has run a check: it is past its start-up
        (pid,) = scheduler.worker_pids()
        assert _nice(pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + _worker.NICE)


def _nice(pid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, pid)
