"""Graceful restart (RFC 4724) against a real BIRD as the helper: a restart stop leaves our routes with the peer, the
next speaker's End-of-RIB keeps what it announces again and drops the rest, and a full stop still withdraws at once.
Without the option, a session that drops takes the routes with it."""

import asyncio
import ipaddress
import time

import bgp
import config
from balancer.lab import bird_lab
from tests.bgp.bgp_support import bird_established, established, speaker_config, wait_for

VIP = ipaddress.ip_network("192.0.2.10/32")
VIP2 = ipaddress.ip_network("192.0.2.11/32")
ATTRS = config.RouteAttributes(med=10)
BIRD_V4 = ipaddress.ip_address("127.0.0.1")


def _config(bird: bird_lab.BirdLab, *, graceful: bool) -> config.BgpConfig:
    restart = config.GracefulRestart(restart_time=60) if graceful else None
    return speaker_config(bird).model_copy(update={"graceful_restart": restart})


async def _started(cfg: config.BgpConfig, bird: bird_lab.BirdLab) -> bgp.Speaker:
    speaker = bgp.Speaker(cfg, restart_delay=0.2)
    await speaker.start()
    await wait_for(lambda: established(speaker), timeout=20)
    await wait_for(lambda: bird_established(bird), timeout=20)
    return speaker


async def _bird_down(bird: bird_lab.BirdLab) -> None:
    await wait_for(lambda: bird.protocols()["xdplb4"].bgp_state != "Established", timeout=10)


async def test_a_restart_stop_leaves_the_routes_and_the_next_end_of_rib_settles_them(bird: bird_lab.BirdLab) -> None:
    first = await _started(_config(bird, graceful=True), bird)
    first.set_routes({VIP: ATTRS, VIP2: ATTRS})
    first.end_of_rib()
    await wait_for(lambda: bird.route(VIP) and bird.route(VIP2))
    await first.stop(withdraw=False)
    await _bird_down(bird)
    await asyncio.sleep(1.0)
    assert bird.route(VIP) and bird.route(VIP2), "BIRD keeps the routes of a peer that restarts"

    second = await _started(_config(bird, graceful=True), bird)
    try:
        await asyncio.sleep(1.0)  # established, nothing announced yet, no End-of-RIB: the stale routes stay
        assert bird.route(VIP) and bird.route(VIP2)
        second.set_routes({VIP: ATTRS})
        second.end_of_rib()
        seen: list[bool] = []

        def settled() -> bool:
            seen.append(bird.route(VIP) is not None)
            return bird.route(VIP2) is None

        await wait_for(settled, timeout=10, interval=0.05)
        assert all(seen), "VIP stayed throughout"
        assert bird.route(VIP) is not None, "announced again: kept"
    finally:
        started = time.monotonic()
        await second.stop()
    await wait_for(lambda: bird.route(VIP) is None, timeout=5)
    assert time.monotonic() - started < 4.0, "a full stop withdraws at once"


async def test_without_graceful_restart_a_dropped_session_takes_the_routes(bird: bird_lab.BirdLab) -> None:
    speaker = await _started(_config(bird, graceful=False), bird)
    speaker.set_routes({VIP: ATTRS})
    speaker.end_of_rib()  # nothing to do without the option: ExaBGP sent its own
    await wait_for(lambda: bird.route(VIP))
    await speaker.stop(withdraw=False)
    await _bird_down(bird)
    await wait_for(lambda: bird.route(VIP) is None, timeout=5)
