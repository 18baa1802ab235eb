"""The desired-state API (``set_routes``) against a real BIRD 2 at VIP scale; every route assertion reads ``birdc``."""

import asyncio
import ipaddress
import logging
import os
import re
import signal
import time

import pytest

import bgp
import config
from balancer.lab import bird_lab
from tests.bgp.bgp_support import bird_established, established, speaker_config, wait_for

Routes = dict[config.Prefix, config.RouteAttributes]
SENT = re.compile(r"event=bgp_routes_sent announced=(\d+) withdrawn=(\d+) commands=(\d+)")


def vips(count: int, start: int = 0) -> list[ipaddress.IPv4Network]:
    """``count`` /32 prefixes from 198.18.0.0 on."""
    return [ipaddress.IPv4Network((0xC6120000 + start + i, 32)) for i in range(count)]


def varied(prefixes: list[ipaddress.IPv4Network]) -> Routes:
    """Routes with a few different attribute sets, as VIPs of several services would have."""
    return {p: config.RouteAttributes(med=i % 5, communities=(f"65000:{i % 3}",)) for i, p in enumerate(prefixes)}


def received(bird: bird_lab.BirdLab, protocol: str = "xdplb4") -> dict[config.Prefix, int | None]:
    """What BIRD holds from ``protocol``: prefix -> MED."""
    return {route.prefix: route.med for route in bird.routes(protocol=protocol)}


def sent(records: list[logging.LogRecord]) -> tuple[int, int, int]:
    """Totals of the writer's ``bgp_routes_sent`` lines: (announced, withdrawn, commands)."""
    totals = [0, 0, 0]
    for record in records:
        if match := SENT.search(record.getMessage()):
            totals = [total + int(value) for total, value in zip(totals, match.groups())]
    return totals[0], totals[1], totals[2]


async def test_250_routes_reach_bird_and_stop_withdraws_them_all(bird: bird_lab.BirdLab) -> None:
    speaker = bgp.Speaker(speaker_config(bird))
    await speaker.start()
    try:
        await wait_for(lambda: established(speaker) and bird_established(bird))
        routes = varied(vips(250))
        speaker.set_routes(routes)
        assert await speaker.flush()
        assert speaker.pending() == frozenset()
        held = await wait_for(lambda: len(r := received(bird)) == 250 and r)
        assert held == {prefix: attributes.med for prefix, attributes in routes.items()}
        sample = bird.route(vips(1, start=7)[0])
        assert sample is not None and (sample.med, sample.communities) == (2, ("65000:1",))
        assert sample.next_hop == ipaddress.ip_address("127.0.0.2")
        await speaker.stop()
        assert bird.routes() == [], "gone as soon as stop() returns"
    finally:
        await speaker.stop()
    log = bird.log()
    closed = log.find("xdplb4: Received: Administrative shutdown")  # the Cease that ends the session
    assert closed > 0
    assert log[:closed].count("xdplb4.ipv4 > removed") == 250, "every withdrawal reached BIRD before the session closed"


async def test_set_routes_applies_the_difference_and_is_idempotent(
    bird: bird_lab.BirdLab, speaker: bgp.Speaker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bgp")
    first = varied(vips(50))
    speaker.set_routes(first)
    assert await speaker.flush()
    await wait_for(lambda: len(received(bird)) == 50)
    caplog.clear()
    speaker.set_routes(dict(first))  # the same set again: nothing to send
    assert await speaker.flush()
    assert sent(caplog.records) == (0, 0, 0)
    second = {**{p: a for p, a in first.items() if int(p.network_address) % 2}, **varied(vips(10, start=100))}
    changed = vips(1, start=1)[0]
    second[changed] = config.RouteAttributes(med=99)
    speaker.set_routes(second)
    assert speaker.announced == second
    assert await speaker.flush()
    held = await wait_for(lambda: (r := received(bird)).keys() == second.keys() and r.get(changed) == 99 and r)
    assert held == {prefix: attributes.med for prefix, attributes in second.items()}
    announced, withdrawn, commands = sent(caplog.records)
    assert (announced, withdrawn) == (10 + 1, 25)
    assert commands < announced + withdrawn, "batched: fewer commands than routes"


async def test_set_routes_never_waits_on_exabgp(bird: bird_lab.BirdLab, speaker: bgp.Speaker) -> None:
    """With ExaBGP stopped (SIGSTOP), set_routes still returns at once; the writer catches up once it runs again."""
    pid = speaker.exabgp_pid
    assert pid is not None
    routes = varied(vips(250))
    os.kill(pid, signal.SIGSTOP)
    try:
        speaker.set_routes(routes)  # a plain call, not a coroutine: nothing here can wait on ExaBGP
        assert speaker.pending() == frozenset(routes)
        await asyncio.sleep(0.2)
        assert speaker.pending() == frozenset(routes), "a stopped ExaBGP acknowledges nothing"
    finally:
        os.kill(pid, signal.SIGCONT)
    assert await speaker.flush()
    await wait_for(lambda: len(received(bird)) == 250)
    assert (speaker.exabgp_pid, speaker.restarts) == (pid, 0)


async def test_a_stalled_event_loop_is_not_blamed_on_exabgp(bird: bird_lab.BirdLab) -> None:
    """Our event loop blocks for longer than the ack timeout, and ExaBGP gets to the commands only when it is back
    (as when a busy daemon takes the CPU ExaBGP needed): ExaBGP was silent only while we were not looking, so it is
    neither judged hung nor restarted. A deadline in wall time would have killed it."""
    async with bgp.Speaker(speaker_config(bird), command_timeout=1.0) as speaker:
        await wait_for(lambda: established(speaker) and bird_established(bird))
        pid = speaker.exabgp_pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            speaker.set_routes(varied(vips(250)))
            await asyncio.sleep(0.01)  # the writer's turn: the commands are written
            time.sleep(2.5)  # the whole event loop stalls
        finally:
            os.kill(pid, signal.SIGCONT)
        assert await speaker.flush()
        assert (speaker.exabgp_pid, speaker.restarts) == (pid, 0)
        await wait_for(lambda: len(received(bird)) == 250)


async def test_replay_after_a_restart_is_batched_and_carries_changes_made_meanwhile(
    bird: bird_lab.BirdLab, speaker: bgp.Speaker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bgp")
    speaker.set_routes(varied(vips(250)))
    await wait_for(lambda: len(received(bird)) == 250)
    pid = speaker.exabgp_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await wait_for(lambda: not bird.routes())
    wanted = varied(vips(200, start=50))  # changed while ExaBGP is down
    speaker.set_routes(wanted)
    caplog.clear()
    held = await wait_for(lambda: len(r := received(bird)) == 200 and r, timeout=20)
    assert held == {prefix: attributes.med for prefix, attributes in wanted.items()}
    await wait_for(lambda: speaker.restarts == 1)
    announced, withdrawn, commands = sent(caplog.records)
    assert (announced, withdrawn) == (200, 0), "a new ExaBGP holds nothing: the whole set, nothing to withdraw"
    assert commands == len(set(wanted.values())), "the replay is one command per attribute set, not one per route"


async def test_withdraw_all_while_a_peer_is_down_stays_withdrawn_when_it_returns(
    bird: bird_lab.BirdLab, speaker: bgp.Speaker
) -> None:
    speaker.set_routes(varied(vips(20)))
    await wait_for(lambda: len(received(bird)) == 20)
    bird.birdc("disable", "xdplb4")
    await wait_for(lambda: speaker.peers()[ipaddress.ip_address("127.0.0.1")].state is bgp.PeerStatus.DOWN)
    speaker.set_routes({})  # `clear adj-rib out`
    assert await speaker.flush()
    bird.birdc("enable", "xdplb4")
    await wait_for(lambda: established(speaker) and bird_established(bird), timeout=20)
    await asyncio.sleep(0.5)
    assert bird.routes() == [], "the peer that came back got nothing stale"
    one = varied(vips(1, start=5))
    speaker.set_routes(one)  # announcing still works after a clear
    await wait_for(lambda: received(bird) == {p: a.med for p, a in one.items()})
