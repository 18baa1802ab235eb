"""The scheduler: rise/fall/fastinter timing on a manual clock, ANDed checks, admin states, run-time changes."""

import asyncio
import dataclasses
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest

import config
import healthchecks
from tests.healthchecks import hc_servers

UP, DOWN, UNKNOWN = healthchecks.HealthState.UP, healthchecks.HealthState.DOWN, healthchecks.HealthState.UNKNOWN
LOOPBACK = hc_servers.LOOPBACK
TIMING: dict[str, Any] = {
    "interval": 10,
    "fast_interval": 1,
    "down_interval": 30,
    "rise": 2,
    "fall": 3,
    "timeout": 0.5,
    "jitter": 0,
}


class Harness:
    """A scheduler on a manual clock, with every run and every change recorded."""

    def __init__(self) -> None:
        self.clock = healthchecks.ManualClock(start=0.0)
        self.runs: asyncio.Queue[tuple[float, healthchecks.CheckRun]] = asyncio.Queue()
        self.scheduler = healthchecks.Scheduler(clock=self.clock, on_check=self._ran, seed=1)
        self.changes: list[healthchecks.HealthChange] = []
        self.scheduler.subscribe(self.changes.append)

    def _ran(self, run: healthchecks.CheckRun) -> None:
        self.runs.put_nowait((self.clock.monotonic(), run))

    async def next_run(self) -> tuple[float, healthchecks.CheckRun]:
        """The next finished run: one already queued, else move the clock to the next due check and wait (in
        real time, generously) for it to finish."""
        await self.settle()
        if self.runs.empty():
            deadline = self.clock.next_deadline()
            assert deadline is not None, "no check is waiting"
            self.clock.advance(deadline - self.clock.monotonic())
        return await asyncio.wait_for(self.runs.get(), 5)

    async def settle(self) -> None:
        """Wait until a run is queued, or every check task is asleep on the clock again."""
        for _ in range(500):
            if not self.runs.empty():
                return
            active = sum(
                len(health.checks)
                for health in self.scheduler.states().values()
                if health.admin is not healthchecks.AdminState.DISABLED
            )
            if self.clock.sleeping() == active:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("check tasks did not settle within 5 s")


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    harness = Harness()
    harness.scheduler.start()
    yield harness
    await harness.scheduler.stop()


def http_target(key: str, port: int, *, path: str = "/", admin: Any = None, **timing: Any) -> healthchecks.Target:
    check = config.HttpCheck.model_validate({"path": path, "timing": {**TIMING, **timing}})
    return healthchecks.Target(
        key=key, address=LOOPBACK, port=port, checks=(check,), admin=admin or healthchecks.AdminState.ENABLED
    )


async def test_rise_fall_fastinter_and_downinter(harness: Harness, flip_server: Any) -> None:
    harness.scheduler.update([http_target("web", flip_server.port)])
    times, verdicts = [], []

    async def run(status: int) -> None:
        flip_server.status = status
        at, checked = await harness.next_run()
        times.append(at)
        verdicts.append((checked.result.ok, harness.scheduler.states()["web"].state))

    await run(200)  # first result decides: up
    for _ in range(3):
        await run(503)  # fall=3: up, up (fast interval), then down
    for _ in range(2):
        await run(200)  # rise=2 after the down interval
    await run(200)
    assert times == [0, 10, 11, 12, 42, 43, 53]
    assert verdicts == [
        (True, UP), (False, UP), (False, UP), (False, DOWN), (True, DOWN), (True, UP), (True, UP),
    ]  # fmt: skip
    assert [(c.old, c.new, c.reason) for c in harness.changes] == [
        (UNKNOWN, UP, "http :%d/: status 200" % flip_server.port),
        (UP, DOWN, "http :%d/: status 503, expected 200-299" % flip_server.port),
        (DOWN, UP, "http :%d/: status 200" % flip_server.port),
    ]
    health = harness.scheduler.states()["web"]
    assert health.since == harness.changes[-1].at == harness.clock.wall() - 10
    assert health.last_result is not None and health.last_result.ok
    assert health.receives_new_traffic and health.weight_factor == 1.0


async def test_a_pass_while_falling_resets_the_count(harness: Harness, flip_server: Any) -> None:
    harness.scheduler.update([http_target("web", flip_server.port)])
    for status in (200, 503, 503, 200, 503, 503):
        flip_server.status = status
        await harness.next_run()
    assert harness.scheduler.states()["web"].state is UP  # never three failures in a row
    flip_server.status = 503
    await harness.next_run()
    assert harness.scheduler.states()["web"].state is DOWN


async def test_without_fast_or_down_interval_the_interval_is_used(harness: Harness, flip_server: Any) -> None:
    harness.scheduler.update([http_target("web", flip_server.port, fast_interval=None, down_interval=None)])
    flip_server.status = 503
    times = [(await harness.next_run())[0] for _ in range(4)]
    assert times == [0, 10, 20, 30]


async def test_jitter_spreads_first_runs_within_the_interval(harness: Harness, flip_server: Any) -> None:
    harness.scheduler.update(
        [http_target(f"web{i}", flip_server.port, jitter=1.0, fast_interval=None) for i in range(20)]
    )
    firsts = sorted([(await harness.next_run())[0] for _ in range(20)])
    assert all(0 <= at <= 10 for at in firsts)
    assert len(set(firsts)) == 20
    assert firsts[-1] - firsts[0] > 5  # spread, not bunched (20 uniform draws over 10 s)


async def test_checks_are_anded_and_the_failing_one_is_named(harness: Harness, flip_server: Any) -> None:
    closed = hc_servers.closed_port()
    checks = (
        config.HttpCheck.model_validate({"timing": TIMING}),
        config.TcpCheck.model_validate({"port": closed, "timing": TIMING}),
    )
    target = healthchecks.Target(key="both", address=LOOPBACK, port=flip_server.port, checks=checks)
    harness.scheduler.update([target])
    await harness.next_run()
    await harness.next_run()
    health = harness.scheduler.states()["both"]
    assert health.state is DOWN
    assert health.reason == f"tcp :{closed}: connection refused"
    assert [c.state for c in health.checks] == [UP, DOWN]
    assert health.weight_factor is None


async def test_admin_drained_keeps_checking_disabled_stops(harness: Harness, flip_server: Any) -> None:
    harness.scheduler.update([http_target("web", flip_server.port)])
    await harness.next_run()
    harness.scheduler.update([http_target("web", flip_server.port, admin=healthchecks.AdminState.DRAINED)])
    drained = harness.scheduler.states()["web"]
    assert (drained.state, drained.admin, drained.weight_factor) == (UP, healthchecks.AdminState.DRAINED, 0.0)
    assert not drained.receives_new_traffic
    at, _ = await harness.next_run()
    assert at == 10  # the timer was not reset by the admin change
    harness.scheduler.update([http_target("web", flip_server.port, admin=healthchecks.AdminState.DISABLED)])
    disabled = harness.scheduler.states()["web"]
    assert (disabled.state, disabled.weight_factor) == (UNKNOWN, None)
    await harness.settle()
    connections = flip_server.connections
    harness.clock.advance(100)
    await asyncio.sleep(0.05)
    assert harness.runs.empty() and flip_server.connections == connections  # no checks while disabled
    harness.scheduler.update([http_target("web", flip_server.port)])
    at, checked = await harness.next_run()
    assert checked.result.ok and harness.scheduler.states()["web"].state is UP
    assert [(c.old, c.new, c.admin.value, c.reason) for c in harness.changes][1:] == [
        (UP, UP, "drained", "admin drained"),
        (UP, UNKNOWN, "disabled", "admin disabled"),
        (UNKNOWN, UNKNOWN, "enabled", "admin enabled"),
        (UNKNOWN, UP, "enabled", f"http :{flip_server.port}/: status 200"),
    ]


async def test_update_adds_removes_and_restarts_only_what_changed(harness: Harness, flip_server: Any) -> None:
    a, b = http_target("a", flip_server.port), http_target("b", flip_server.port, interval=7, fast_interval=None)
    harness.scheduler.update([a])
    await harness.next_run()  # a at 0; next at 10
    harness.clock.advance(3)
    harness.scheduler.update([a, b])  # b starts at 3, a keeps its timer
    seen = sorted([(at, run.key) for at, run in [await harness.next_run() for _ in range(3)]])
    assert seen == [(3, "b"), (10, "a"), (10, "b")]
    since_a = harness.scheduler.states()["a"].since
    harness.scheduler.update([a])  # b removed
    assert set(harness.scheduler.states()) == {"a"}
    assert harness.changes[-1].key == "b" and harness.changes[-1].reason == "removed"
    assert [run.key for _, run in [await harness.next_run() for _ in range(2)]] == ["a", "a"]
    # A changed check restarts "a" at once (no jitter) and keeps its state and since.
    changed = http_target("a", flip_server.port, path="/health")
    harness.scheduler.update([changed])
    at, run = await harness.next_run()
    assert (at, run.key) == (30, "a")
    health = harness.scheduler.states()["a"]
    assert (health.state, health.since) == (UP, since_a)
    check = health.checks[0].check
    assert isinstance(check, config.HttpCheck) and check.path == "/health"


async def test_update_rejects_duplicates_and_bad_checks_without_changing_anything(harness: Harness) -> None:
    target = http_target("a", 80)
    with pytest.raises(ValueError, match="duplicate"):
        harness.scheduler.update([target, target])
    bad = config.HttpCheck.model_construct(headers={"X": "a\nb"}, timing=config.CheckTiming.model_validate(TIMING))
    with pytest.raises(healthchecks.HealthCheckConfigError):
        harness.scheduler.update([target, healthchecks.Target(key="b", address=LOOPBACK, port=80, checks=(bad,))])
    assert dict(harness.scheduler.states()) == {}


async def test_lifecycle_preconditions() -> None:
    scheduler = healthchecks.Scheduler()
    async with scheduler:
        with pytest.raises(healthchecks.SchedulerStateError):
            scheduler.start()
    with pytest.raises(healthchecks.SchedulerStateError):
        scheduler.update([])
    await scheduler.stop()  # twice is fine
    assert [change async for change in scheduler.events()] == []


async def test_target_without_checks_is_up_at_once(harness: Harness) -> None:
    harness.scheduler.update([healthchecks.Target(key="bare", address=LOOPBACK, port=80, checks=())])
    health = harness.scheduler.states()["bare"]
    assert (health.state, health.reason, health.weight_factor) == (UP, "no checks configured", 1.0)
    assert [(c.old, c.new) for c in harness.changes] == [(UNKNOWN, UP)]


async def test_target_disabled_from_the_start_is_never_checked(harness: Harness, flip_server: Any) -> None:
    harness.scheduler.update([http_target("off", flip_server.port, admin=healthchecks.AdminState.DISABLED)])
    harness.clock.advance(100)
    await asyncio.sleep(0.05)
    health = harness.scheduler.states()["off"]
    assert (health.state, health.reason) == (UNKNOWN, "admin disabled")
    assert flip_server.connections == 0 and harness.runs.empty() and harness.changes == []


async def test_a_failing_subscriber_or_hook_does_not_stop_checks(flip_server: Any) -> None:
    clock = healthchecks.ManualClock(start=0.0)
    calls: list[str] = []

    def bad_hook(run: healthchecks.CheckRun) -> None:
        calls.append("hook")
        raise RuntimeError("hook bug")

    def bad_callback(change: healthchecks.HealthChange) -> None:
        calls.append("callback")
        raise RuntimeError("callback bug")

    async with healthchecks.Scheduler(clock=clock, on_check=bad_hook) as scheduler:
        scheduler.subscribe(bad_callback)
        first, second = scheduler.events(), scheduler.events()
        scheduler.update([http_target("web", flip_server.port)])
        for status in (200, 503, 503, 503):
            flip_server.status = status
            before = len(calls)
            async with asyncio.timeout(5):
                while len(calls) == before or clock.sleeping() == 0:
                    await asyncio.sleep(0.01)
            clock.advance(clock.next_deadline() - clock.monotonic())  # type: ignore[operator]
        async with asyncio.timeout(5):
            while scheduler.states()["web"].state is not DOWN:
                await asyncio.sleep(0.01)
        second.close()
    assert calls.count("callback") == 2 and calls.count("hook") >= 4
    changes = [(c.old, c.new) async for c in first]
    assert changes == [(UNKNOWN, UP), (UP, DOWN)]
    assert [(c.old, c.new) async for c in second] == [(UNKNOWN, UP), (UP, DOWN)]  # closed, but keeps what it had


def test_update_before_start_needs_no_event_loop() -> None:
    scheduler = healthchecks.Scheduler()
    scheduler.update([http_target("a", 80), healthchecks.Target(key="bare", address=LOOPBACK, port=80, checks=())])
    scheduler.update([http_target("a", 81)])  # replaced and removed before anything ran
    assert {key: health.state for key, health in scheduler.states().items()} == {"a": UNKNOWN}


async def test_targets_given_before_start_are_checked_once_started(flip_server: Any) -> None:
    scheduler = healthchecks.Scheduler()
    scheduler.update([http_target("a", flip_server.port, interval=0.2, timeout=0.2)])
    await asyncio.sleep(0.1)
    assert flip_server.connections == 0
    async with scheduler:
        async with asyncio.timeout(5):
            while scheduler.states()["a"].state is not UP:
                await asyncio.sleep(0.02)


class _SwallowsCancellation:
    """Behaves as aiohttp's client does when a cancel races its timeout: the cancel comes back as a failed check."""

    start = None

    def __init__(self) -> None:
        self.runs = 0

    async def run(self) -> tuple[bool, str]:
        self.runs += 1
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            return False, "timeout"
        return True, "ok"

    async def close(self) -> None:
        pass

    def release(self) -> None:
        pass


async def test_stop_ends_a_checker_that_swallows_its_cancellation(monkeypatch: pytest.MonkeyPatch) -> None:
    checker = _SwallowsCancellation()
    monkeypatch.setattr("healthchecks._checker.make_checker", lambda *args, **kwargs: checker)
    timing: dict[str, Any] = {"interval": 0.02, "timeout": 0.01, "rise": 1, "fall": 1, "jitter": 0}
    scheduler = healthchecks.Scheduler()
    scheduler.update([http_target("a", 80, **timing)])
    scheduler.start()
    tasks_before = len(asyncio.all_tasks())
    while checker.runs < 3:
        await asyncio.sleep(0.005)
    async with asyncio.timeout(2):
        await scheduler.stop()
    runs_at_stop = checker.runs
    await asyncio.sleep(0.1)
    assert checker.runs == runs_at_stop, "the check loop ended with stop()"
    assert len(asyncio.all_tasks()) < tasks_before


class _Buggy:
    """A checker with a bug on some runs: raises while ``broken`` is true, passes otherwise."""

    start = None

    def __init__(self) -> None:
        self.broken = True
        self.runs = 0

    async def run(self) -> tuple[bool, str]:
        self.runs += 1
        if self.broken:
            raise RuntimeError("bug")
        return True, "ok"

    async def close(self) -> None:
        pass

    def release(self) -> None:
        pass


async def test_a_checker_bug_is_logged_with_its_traceback_once_per_spell_not_every_run(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    checker = _Buggy()
    monkeypatch.setattr("healthchecks._checker.make_checker", lambda *args, **kwargs: checker)
    harness = Harness()
    harness.scheduler.update([http_target("a", 80, **TIMING)])
    async with harness.scheduler:
        for _ in range(4):
            _, run = await harness.next_run()
            assert (run.result.ok, run.result.reason) == (False, "internal error: RuntimeError: bug")
        checker.broken = False
        await harness.next_run()
        checker.broken = True
        await harness.next_run()
    logged = [r for r in caplog.records if "event=checker_failed" in r.getMessage()]
    assert len(logged) == 2 and all(r.exc_info for r in logged)


async def test_stopping_a_check_in_flight_closes_its_connection_and_records_nothing(raw_server: Any) -> None:
    server = await raw_server(hc_servers.silent)
    runs: list[healthchecks.CheckRun] = []
    scheduler = healthchecks.Scheduler(on_check=runs.append)
    scheduler.update([http_target("web", server.port, timeout=5, interval=10, fast_interval=10)])
    scheduler.start()
    async with asyncio.timeout(5):
        while server.open == 0:
            await asyncio.sleep(0.01)
    scheduler.update([])
    async with asyncio.timeout(2):
        while server.open:
            await asyncio.sleep(0.01)
    await scheduler.stop()
    assert runs == []


async def test_a_subscriber_that_removes_the_target_on_its_change_stops_its_checks(flip_server: Any) -> None:
    runs: list[healthchecks.CheckRun] = []
    scheduler = healthchecks.Scheduler(on_check=runs.append)

    def remove_on_change(change: healthchecks.HealthChange) -> None:
        if change.new is UP:
            scheduler.update([])  # synchronously, from within the run that made the change

    scheduler.subscribe(remove_on_change)
    scheduler.update([http_target("web", flip_server.port, interval=0.05, fast_interval=0.05, timeout=0.05, rise=1)])
    async with scheduler:
        async with asyncio.timeout(5):
            while not runs:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
    assert len(runs) == 1, "no check ran after the target was removed"


async def test_a_removed_or_changed_target_closes_its_kept_alive_connection(raw_server: Any) -> None:
    server = await raw_server(hc_servers.http_kept(requests=100))
    check = config.HttpCheck.model_validate(
        {"path": "/", "keepalive": True, "timing": {**TIMING, "interval": 0.05, "fast_interval": 0.05, "timeout": 0.05}}
    )
    target = healthchecks.Target(key="a", address=LOOPBACK, port=server.port, checks=(check,))
    runs: list[healthchecks.CheckRun] = []
    scheduler = healthchecks.Scheduler(on_check=runs.append)
    scheduler.update([target])
    async with scheduler:
        async with asyncio.timeout(5):
            while len(runs) < 3:
                await asyncio.sleep(0.01)
        assert all(run.result.ok for run in runs), runs
        assert (server.connections, server.open) == (1, 1)
        scheduler.update([dataclasses.replace(target, checks=(check.model_copy(update={"path": "/b"}),))])
        async with asyncio.timeout(5):
            while server.connections < 2:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert server.open == 1, "the changed check closed the old connection and kept its new one"
        scheduler.update([])
        await asyncio.sleep(0.05)
        assert server.open == 0, "the removed target's connection is closed, not left to the server"


@pytest.mark.parametrize("keepalive", [False, True])
async def test_check_runs_leave_no_reference_cycles(raw_server: Any, keepalive: bool) -> None:
    """Thousands of checks a second: a cycle per run would be garbage for the collector to find, at a cost that
    grows with everything else the checker holds."""
    behaviour = hc_servers.http_kept(requests=1000) if keepalive else hc_servers.http_status(lambda: 200)
    server = await raw_server(behaviour)
    timing = {**TIMING, "interval": 0.05, "fast_interval": 0.05, "timeout": 0.05}
    check = config.HttpCheck.model_validate({"path": "/", "keepalive": keepalive, "timing": timing})
    targets = [healthchecks.Target(key=f"t{i}", address=LOOPBACK, port=server.port, checks=(check,)) for i in range(4)]
    runs: list[healthchecks.CheckRun] = []
    scheduler = healthchecks.Scheduler(on_check=runs.append)
    scheduler.update(targets)
    async with scheduler:
        await asyncio.sleep(0.2)
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            first = len(runs)
            await asyncio.sleep(0.5)
            gc.collect()
            ours = [o for o in gc.garbage if _from_healthchecks(o)]
            gc.garbage.clear()
            scheduler.update([])  # and the removed targets leave nothing for the collector either
            await asyncio.sleep(0.1)
            gc.collect()
            removed = [o for o in gc.garbage if _from_healthchecks(o)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    assert len(runs) - first >= 20, "the checks ran"
    assert all(run.result.ok for run in runs), runs[-1]
    assert ours == [], sorted({f"{type(o).__qualname__} {getattr(o, '__qualname__', '')}" for o in ours})
    assert removed == [], sorted({f"{type(o).__qualname__} {getattr(o, '__qualname__', '')}" for o in removed})


def _from_healthchecks(thing: object) -> bool:
    """Whether ``thing`` is one of the checker's objects or functions (the test's own servers make garbage too)."""
    module = thing.__module__ if callable(thing) and hasattr(thing, "__module__") else type(thing).__module__
    return isinstance(module, str) and module.startswith("healthchecks")


async def test_a_stream_with_a_backlog_lets_the_loop_run_between_slices() -> None:
    """The first verdicts of 10,000 backends arrive at once; reading them must not hold the loop until the last."""
    from healthchecks import _events

    hub = _events.EventHub()
    stream = hub.stream()
    backlog = 50_000
    for index in range(backlog):
        hub.publish(
            healthchecks.HealthChange(f"b{index}", UNKNOWN, UP, "status 200", 0.0, healthchecks.AdminState.ENABLED)
        )
    hub.close()
    read = 0
    seen: list[int] = []  # how many the reader had read, at each turn the loop gave another task

    async def other_work() -> None:
        while True:
            seen.append(read)
            await asyncio.sleep(0)

    other = asyncio.create_task(other_work())
    async for _ in stream:
        read += 1
    other.cancel()
    assert read == backlog
    assert any(0 < count < backlog for count in seen), "the loop ran other work while the backlog was read"
