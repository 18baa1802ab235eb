"""The three changes ``bgp/_exabgp_main.py`` makes to ExaBGP, each against a real BIRD 2 (the reload one is in
test_bgp_reconfigure.py: a refused config followed by a good one)."""

import asyncio
import ipaddress
import re
import time

import bgp
import config
from balancer.lab import bird_lab
from tests.bgp.bgp_support import BIRD_V4, established, speaker_config, wait_for

VIP = ipaddress.ip_network("192.0.2.10/32")


async def test_clean_stop_ends_each_session_with_a_cease(bird: bird_lab.BirdLab) -> None:
    speaker = bgp.Speaker(speaker_config(bird))
    await speaker.start()
    await wait_for(lambda: established(speaker))
    await speaker.announce(VIP, config.RouteAttributes())
    await wait_for(lambda: bird.route(VIP))
    started = time.monotonic()
    await speaker.stop()
    took = time.monotonic() - started
    assert bird.routes() == []
    for name in ("xdplb4", "xdplb6"):
        detail = bird.birdc("show", "protocols", "all", name)
        assert re.search(r"Last error:\s+Received: Administrative shutdown", detail), detail
    log = bird.log()
    assert log.find(f"xdplb4.ipv4 > removed [sole] {VIP}") < log.find("xdplb4: Received: Administrative shutdown")
    assert took < 1.5, f"stop() took {took:.2f}s"


async def test_reconnect_after_an_outage_waits_at_most_five_seconds(bird: bird_lab.BirdLab) -> None:
    """BIRD refuses the session for 25 s. Stock ExaBGP's retries would be 7 s apart by then (1, 2, 3, 4, 5, 7, 9 s,
    up to 60 s); capped, no gap exceeds 5 s, and the session is back within about 5 s of BIRD taking it again.
    Meanwhile the peer's ``since`` and ``reason`` stay those of the session's end."""
    attempts: list[float] = []

    def seen(state: bgp.PeerState) -> None:
        if state.address == BIRD_V4 and state.state is bgp.PeerStatus.CONNECTED:
            attempts.append(time.monotonic())

    async with bgp.Speaker(speaker_config(bird), on_peer_change=seen) as speaker:
        await wait_for(lambda: established(speaker))
        bird.birdc("disable", "xdplb4")
        down = await wait_for(lambda: (s := speaker.peers()[BIRD_V4]) and s.state is not bgp.PeerStatus.ESTABLISHED
                              and s)  # fmt: skip
        outage_started = time.monotonic()
        await asyncio.sleep(25)
        during = [a for a in attempts if a > outage_started]
        assert len(during) >= 6, f"ExaBGP kept retrying: {len(during)} attempts"
        gaps = [later - earlier for earlier, later in zip(during, during[1:])]
        assert max(gaps) < 5.8, f"retry gaps {[round(g, 1) for g in gaps]}"
        state = speaker.peers()[BIRD_V4]
        assert (state.since, state.reason) == (down.since, down.reason), "retries moved neither"
        assert state.reason is not None and "(6,2)" in state.reason, state.reason  # BIRD's Cease, kept
        bird.birdc("enable", "xdplb4")
        enabled = time.monotonic()
        await wait_for(lambda: bird.protocols()["xdplb4"].bgp_state == "Established", timeout=15, interval=0.02)
        assert time.monotonic() - enabled < 6.5
