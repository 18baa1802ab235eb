"""The bound on checks in flight: a slow server slows the checks down instead of piling them up."""

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import healthchecks
from healthchecks import _admission
from tests.healthchecks import hc_servers
from tests.healthchecks.test_scheduler import http_target


def _start_noting(name: str, started: list[str]) -> Callable[[], bool]:
    """A check's start that notes ``name`` in ``started`` and goes ahead."""

    def start() -> bool:
        started.append(name)
        return True

    return start


def test_checks_past_the_limit_wait_in_order_and_get_the_room_of_those_that_end() -> None:
    admission = _admission.Admission(2)
    started: list[str] = []
    for name in "abcd":
        admission.admit(_start_noting(name, started))
    assert (started, admission.in_flight, admission.waiting, admission.waited_total) == (["a", "b"], 2, 2, 2)
    admission.release()
    assert (started, admission.in_flight) == (["a", "b", "c"], 2)


def test_a_waiting_check_whose_target_stopped_passes_its_turn_on() -> None:
    admission = _admission.Admission(1)
    started: list[str] = []
    admission.admit(_start_noting("a", started))
    admission.admit(lambda: False)  # stopped while it waited
    admission.admit(_start_noting("c", started))
    admission.release()
    assert (started, admission.in_flight, admission.waiting) == (["a", "c"], 1, 0)


def test_checks_that_end_as_they_start_hand_the_room_on_without_recursion() -> None:
    admission = _admission.Admission(1)
    count = 0

    def start_and_fail_at_once() -> bool:
        nonlocal count
        count += 1
        admission.release()  # e.g. a refused connection reported synchronously
        return True

    admission.admit(lambda: True)
    for _ in range(20_000):
        admission.admit(start_and_fail_at_once)
    admission.release()
    assert (count, admission.in_flight, admission.waiting) == (20_000, 0, 0)


async def test_a_task_cancelled_while_waiting_gives_no_room_away() -> None:
    admission = _admission.Admission(1)
    admission.admit(lambda: True)

    async def wait_turn() -> None:
        async with admission.turn():
            pass

    waiting = asyncio.create_task(wait_turn())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    admission.release()
    assert (admission.in_flight, admission.waiting) == (0, 0)
    async with admission.turn():
        assert admission.in_flight == 1
    assert admission.in_flight == 0


@pytest.mark.parametrize("path", ["lean", "task"])
async def test_a_slow_server_sees_no_more_connections_at_once_than_the_limit(raw_server: Any, path: str) -> None:
    answer = hc_servers.http_status(lambda: 200)
    most = 0

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal most
        most = max(most, server.open)
        await asyncio.sleep(0.1)
        await answer(reader, writer)  # type: ignore[misc]

    server = await raw_server(slow)
    runs: list[healthchecks.CheckRun] = []
    scheduler = healthchecks.Scheduler(on_check=runs.append, max_in_flight=2)
    timing: dict[str, Any] = {"interval": 0.5, "fast_interval": 0.5, "down_interval": 0.5, "timeout": 0.5, "jitter": 0}
    targets = [http_target(f"web{i}", server.port, **timing) for i in range(6)]
    if path == "task":  # keep-alive checks run by a task each, not from the timers
        targets = [_keepalive(t) for t in targets]
    scheduler.update(targets)
    async with scheduler:
        async with asyncio.timeout(10):
            while len({run.key for run in runs}) < 6:
                await asyncio.sleep(0.02)
    assert most == 2, "the third connection waited for one of two to end"
    assert all(run.result.ok for run in runs), "waiting is not failing"
    assert max(run.lag for run in runs) >= 0.1, "the wait shows as scheduling lag"


def _keepalive(target: healthchecks.Target) -> healthchecks.Target:
    check = target.checks[0].model_copy(update={"keepalive": True})
    return healthchecks.Target(key=target.key, address=target.address, port=target.port, checks=(check,))


async def test_a_target_removed_with_its_check_in_flight_gives_its_room_back(raw_server: Any) -> None:
    server = await raw_server(hc_servers.silent)  # never answers: the first check holds the only room
    answering = await raw_server(hc_servers.http_status(lambda: 200))
    runs: list[healthchecks.CheckRun] = []
    scheduler = healthchecks.Scheduler(on_check=runs.append, max_in_flight=1)
    timing: dict[str, Any] = {"interval": 10, "fast_interval": 10, "timeout": 5, "jitter": 0}
    silent, fine = http_target("silent", server.port, **timing), http_target("fine", answering.port, **timing)
    scheduler.update([silent])
    async with scheduler:
        async with asyncio.timeout(5):
            while server.open == 0:
                await asyncio.sleep(0.01)
        scheduler.update([silent, fine])
        await asyncio.sleep(0.2)
        assert runs == [], "waiting behind the silent check"
        scheduler.update([fine])
        async with asyncio.timeout(5):
            while not runs:
                await asyncio.sleep(0.01)
    assert [(run.key, run.result.ok) for run in runs] == [("fine", True)]
