"""Faults do not spread, nothing hangs or leaks over many flapping cycles, events are complete, uvloop works."""

import asyncio
import random
import pathlib
import time
from collections.abc import Callable
from typing import Any

import pytest
import uvloop

import config
import healthchecks
from tests.healthchecks import hc_servers

UP, DOWN = healthchecks.HealthState.UP, healthchecks.HealthState.DOWN
LOOPBACK = hc_servers.LOOPBACK


def target(key: str, port: int, check: dict[str, Any]) -> healthchecks.Target:
    model = config.TcpCheck if check.get("type") == "tcp" else config.HttpCheck
    return healthchecks.Target(key=key, address=LOOPBACK, port=port, checks=(model.model_validate(check),))


async def test_bad_backends_go_down_with_reasons_while_a_good_one_stays_up(raw_server: Any) -> None:
    good = await raw_server(hc_servers.http_status(lambda: 200))
    bad = {name: await raw_server(getattr(hc_servers, name)) for name in ("silent", "garbage", "reset", "trickle")}
    timing = {"interval": 0.3, "timeout": 0.25, "rise": 1, "fall": 1, "jitter": 0.5}
    runs: list[healthchecks.CheckRun] = []
    async with healthchecks.Scheduler(on_check=runs.append) as scheduler:
        changes = scheduler.events()
        scheduler.update(
            [target("good", good.port, {"timing": timing})]
            + [target(name, server.port, {"timing": timing}) for name, server in bad.items()]
        )
        down: dict[str, str] = {}
        async with asyncio.timeout(10):
            async for change in changes:
                if change.new is DOWN:
                    down[change.key] = change.reason
                if len(down) == len(bad):
                    break
        await asyncio.sleep(1.0)
        states = scheduler.states()
    assert "good" not in down and states["good"].state is UP
    assert down["silent"].endswith("timeout after 0.25s waiting for the response")
    assert down["trickle"].endswith("timeout after 0.25s waiting for the response")
    assert "bad response: not HTTP" in down["garbage"]
    assert down["reset"].endswith("connection reset")
    good_runs = [run for run in runs if run.key == "good"]
    assert len(good_runs) >= 4
    assert all(run.result.ok for run in good_runs)
    assert max(run.lag for run in good_runs) < 0.25  # less than one timeout of the slow ones: they did not hold it up
    assert all(run.result.duration < 0.25 + 1.0 for run in runs)


def cycling(behaviours: list[Callable[..., Any]]) -> Callable[..., Any]:
    """A server behaviour that picks one of ``behaviours`` at random (seeded) for each connection."""
    pick = random.Random(7).choice

    def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Any:
        return pick(behaviours)(reader, writer)

    return behaviour


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("engine", "runs_wanted"), [("lean", 3000), ("aiohttp", 1000)])
async def test_many_flapping_cycles_leak_no_fds_or_tasks_and_lose_no_events(
    raw_server: Any, engine: healthchecks.HttpEngine, runs_wanted: int
) -> None:
    ok = hc_servers.http_status(lambda: 200)
    server = await raw_server(
        cycling([ok, hc_servers.silent, ok, hc_servers.garbage, ok, hc_servers.reset, ok, hc_servers.close_at_once,
                 ok, hc_servers.trickle])
    )  # fmt: skip
    tls_server = await raw_server(cycling([hc_servers.silent, hc_servers.garbage, hc_servers.reset]))
    fds_before, tasks_before = hc_servers.open_fds(), len(asyncio.all_tasks())
    timing = {"interval": 0.03, "timeout": 0.03, "rise": 1, "fall": 1}
    targets = [target(f"http{i}", server.port, {"timing": timing, "keepalive": i % 2 == 1}) for i in range(16)]
    targets += [target(f"tls{i}", tls_server.port, {"type": "https", "timing": timing}) for i in range(4)]
    tcp = {"type": "tcp", "send": "GET / HTTP/1.0\\r\\n\\r\\n", "expect": "HTTP/1.1 200", "timing": timing}
    targets += [target(f"tcp{i}", server.port, tcp) for i in range(4)]
    by_callback: list[healthchecks.HealthChange] = []
    count = 0
    done = asyncio.Event()

    def ran(run: healthchecks.CheckRun) -> None:
        nonlocal count
        count += 1
        if count >= runs_wanted:
            done.set()

    scheduler = healthchecks.Scheduler(on_check=ran, http_engine=engine)
    scheduler.subscribe(by_callback.append)
    stream = scheduler.events()
    started = time.monotonic()
    async with asyncio.timeout(60):
        async with scheduler:
            scheduler.update(targets)
            await asyncio.wait_for(done.wait(), 40)
            final = dict(scheduler.states())
            stopping = time.monotonic()
        stop_took = time.monotonic() - stopping
        by_stream = [change async for change in stream]  # the stream ends once the scheduler has stopped
    elapsed = time.monotonic() - started

    assert stop_took < 5, "stop() was slow"
    assert by_stream == by_callback
    assert len(by_stream) > runs_wanted // 10, "the backends were meant to flap"
    for key in final:
        mine = [change for change in by_stream if change.key == key]
        assert all(a.new == b.old for a, b in zip(mine, mine[1:])), key  # in order, none missing
        assert mine[-1].new == final[key].state
    # Server-side handlers end when the checker's reset reaches them; give them a moment.
    for _ in range(100):
        if hc_servers.open_fds() <= fds_before and len(asyncio.all_tasks()) <= tasks_before:
            break
        await asyncio.sleep(0.05)
    assert hc_servers.open_fds() <= fds_before, f"fds leaked after {count} checks in {elapsed:.1f}s"
    assert len(asyncio.all_tasks()) <= tasks_before


def test_works_on_uvloop(tmp_path: pathlib.Path, certs: dict[str, pathlib.Path]) -> None:
    async def scenario() -> dict[str, healthchecks.BackendHealth]:
        good = await hc_servers.HttpApp().start()
        expired = await hc_servers.HttpApp().start(hc_servers.server_context(certs, "expired"))
        silent = await hc_servers.RawServer(hc_servers.silent).start()
        dns = await hc_servers.DnsResponder().start()
        timing = {"interval": 0.2, "timeout": 0.2, "rise": 1, "fall": 1, "jitter": 0}
        targets = [
            target("good", good.port, {"path": "/ok", "timing": timing}),
            target(
                "expired",
                expired.port,
                {"type": "https", "ca_file": str(certs["ca"]), "sni": "localhost", "timing": timing},
            ),  # fmt: skip
            target("silent", silent.port, {"timing": timing}),
            healthchecks.Target(
                key="dns", address=LOOPBACK, port=dns.port, checks=(config.DnsCheck.model_validate({"timing": timing}),)
            ),
        ]
        try:
            async with healthchecks.Scheduler() as scheduler:
                scheduler.update(targets)
                async with asyncio.timeout(10):
                    while any(h.state is healthchecks.HealthState.UNKNOWN for h in scheduler.states().values()):
                        await asyncio.sleep(0.05)
                return dict(scheduler.states())
        finally:
            for server in (good, expired, silent, dns):
                await server.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)
        states = runner.run(scenario())
    assert {key: health.state.value for key, health in states.items()} == {
        "good": "up", "expired": "down", "silent": "down", "dns": "up"
    }  # fmt: skip
    assert states["expired"].reason.endswith("TLS error: certificate has expired")
    assert states["silent"].reason.endswith("timeout after 0.2s waiting for the response")
