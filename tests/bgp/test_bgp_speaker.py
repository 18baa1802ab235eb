"""The speaker against a real BIRD 2 peer on loopback; every assertion reads ``birdc`` output."""

import asyncio
import ipaddress
import os
import re
import signal

import pytest

import bgp
import config
from balancer.lab import bird_lab
from tests.bgp.bgp_support import established, speaker_config, wait_for

VIP = ipaddress.ip_network("192.0.2.10/32")
VIP2 = ipaddress.ip_network("192.0.2.11/32")
VIP6 = ipaddress.ip_network("2001:db8::10/128")
ATTRS = config.RouteAttributes(
    med=100, local_preference=200, communities=("65000:1", "65000:2"), large_communities=("4200000001:1:2",)
)


async def test_fresh_start_establishes_and_announces_nothing(bird: bird_lab.BirdLab) -> None:
    async with bgp.Speaker(speaker_config(bird)) as speaker:
        protocols = await wait_for(
            lambda: (p := bird.protocols()) and p["xdplb4"].bgp_state == p["xdplb6"].bgp_state == "Established" and p
        )
        assert protocols["xdplb4"].state == "up"
        detail = bird.birdc("show", "protocols", "all", "xdplb6")
        assert re.search(r"Hold timer:\s+[\d.]+/15\n", detail), "our hold time (15) is below BIRD's (240)"
        assert "Neighbor AS:      4200000001" in detail
        assert "Graceful restart" not in detail.split("Neighbor capabilities")[1], "GR would keep routes on death"
        await wait_for(lambda: established(speaker))
        await asyncio.sleep(0.3)  # give a wrongly configured static route time to show up
        assert bird.routes() == []
        assert speaker.announced == {}
        assert {state.routes_sent for state in speaker.peers().values()} == {0}


async def test_announce_shows_in_bird_with_attributes(bird: bird_lab.BirdLab, speaker: bgp.Speaker) -> None:
    await speaker.announce(VIP, ATTRS)
    route = await wait_for(lambda: bird.route(VIP))
    assert route.protocol == "xdplb4"
    assert route.next_hop == ipaddress.ip_address("127.0.0.2"), "next-hop self is the session's local address"
    assert route.med == 100
    assert route.local_pref == 200
    assert route.communities == ("65000:1", "65000:2")
    assert route.large_communities == ("4200000001:1:2",)
    assert route.as_path == (), "iBGP: empty AS path"
    assert speaker.announced == {VIP: ATTRS}
    await wait_for(lambda: speaker.peers()[ipaddress.ip_address("127.0.0.1")].routes_sent == 1)
    assert speaker.peers()[ipaddress.ip_address("::1")].routes_sent == 0, "an IPv4 prefix is not sent on IPv6"


async def test_reannounce_is_idempotent_and_changed_attributes_replace(
    bird: bird_lab.BirdLab, speaker: bgp.Speaker
) -> None:
    def imports() -> list[str]:  # BIRD's debug log has a "> " line for every update it receives (added, ignored...)
        return [line for line in bird.log().splitlines() if str(VIP) in line and " > " in line]

    await speaker.announce(VIP, ATTRS)
    first = await wait_for(lambda: bird.route(VIP))
    taken = await wait_for(imports)
    await speaker.announce(VIP, ATTRS)
    await asyncio.sleep(0.3)
    assert bird.route(VIP) == first and imports() == taken, "the same announcement again sends nothing"
    changed = ATTRS.merged(config.RouteAttributes(med=5, communities=()))
    await speaker.announce(VIP, changed)
    route = await wait_for(lambda: (r := bird.route(VIP)) and r.med == 5 and r)
    assert len(imports()) == len(taken) + 1, "a changed announcement is one update"
    assert route.communities == ()
    assert route.local_pref == 200
    assert len(bird.routes(VIP)) == 1, "replaced, not added"


async def test_withdraw_removes_route_and_repeats_harmlessly(bird: bird_lab.BirdLab, speaker: bgp.Speaker) -> None:
    await speaker.announce(VIP, ATTRS)
    await speaker.announce(VIP2, config.RouteAttributes())
    await wait_for(lambda: bird.route(VIP) and bird.route(VIP2))
    await speaker.withdraw(VIP)
    await wait_for(lambda: bird.route(VIP) is None)
    assert bird.route(VIP2) is not None, "only the withdrawn prefix goes"
    await speaker.withdraw(VIP)
    assert set(speaker.announced) == {VIP2}


async def test_ipv6_prefix_over_ipv6_ebgp_session(bird: bird_lab.BirdLab, speaker: bgp.Speaker) -> None:
    attrs = config.RouteAttributes(med=7, communities=("65000:6",), large_communities=("65000:6:6",))
    await speaker.announce(VIP6, attrs)
    route = await wait_for(lambda: bird.route(VIP6))
    assert route.protocol == "xdplb6"
    assert route.next_hop == ipaddress.ip_address("::1")
    assert route.as_path == (4200000001,), "eBGP from a 4-byte ASN"
    assert (route.med, route.communities, route.large_communities) == (7, ("65000:6",), ("65000:6:6",))
    assert bird.routes(protocol="xdplb4") == [], "an IPv6 prefix is not sent on the IPv4 session"
    await speaker.withdraw(VIP6)
    await wait_for(lambda: bird.route(VIP6) is None)


async def test_killed_exabgp_is_restarted_and_routes_come_back(bird: bird_lab.BirdLab, speaker: bgp.Speaker) -> None:
    await speaker.announce(VIP, ATTRS)
    await speaker.announce(VIP6, config.RouteAttributes(med=3))
    await wait_for(lambda: bird.route(VIP) and bird.route(VIP6))
    pid = speaker.exabgp_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await wait_for(lambda: bird.route(VIP) is None and bird.route(VIP6) is None)
    # Changes made while ExaBGP is down are kept and replayed too.
    await speaker.withdraw(VIP6)
    await speaker.announce(VIP2, config.RouteAttributes(med=9))
    route = await wait_for(lambda: bird.route(VIP), timeout=15)
    assert (route.med, route.local_pref, route.communities) == (100, 200, ("65000:1", "65000:2"))
    assert (await wait_for(lambda: bird.route(VIP2))).med == 9
    assert bird.route(VIP6) is None
    await wait_for(lambda: speaker.restarts == 1)  # counted once the replay is acknowledged
    assert speaker.exabgp_pid not in (None, pid)


async def test_clean_stop_withdraws_before_closing(bird: bird_lab.BirdLab) -> None:
    speaker = bgp.Speaker(speaker_config(bird))
    await speaker.start()
    await wait_for(lambda: established(speaker))
    await speaker.announce(VIP, ATTRS)
    await speaker.announce(VIP6, config.RouteAttributes())
    await wait_for(lambda: bird.route(VIP) and bird.route(VIP6))
    await asyncio.gather(speaker.stop(), speaker.stop())  # a second, concurrent stop waits for the first
    assert bird.routes() == [], "gone as soon as stop() returns"
    assert speaker.announced == {}
    log = bird.log()
    for proto, prefix in (("xdplb4.ipv4", VIP), ("xdplb6.ipv6", VIP6)):
        removed = log.find(f"{proto} > removed [sole] {prefix}")
        closed = log.find(f"{proto.split('.')[0]}: Received: Administrative shutdown")  # the Cease
        assert 0 <= removed < closed, f"BIRD saw the withdrawal of {prefix} before the session closed:\n{log}"
    await speaker.stop()  # idempotent
    with pytest.raises(bgp.SpeakerStateError):
        await speaker.announce(VIP, ATTRS)


async def test_peer_that_comes_back_gets_the_current_set(bird: bird_lab.BirdLab, speaker: bgp.Speaker) -> None:
    await speaker.announce(VIP, ATTRS)
    await wait_for(lambda: bird.route(VIP))
    bird.birdc("disable", "xdplb4")
    await wait_for(lambda: bird.route(VIP) is None)
    await wait_for(lambda: speaker.peers()[ipaddress.ip_address("127.0.0.1")].state is bgp.PeerStatus.DOWN)
    await speaker.announce(VIP2, config.RouteAttributes(med=1))  # while the peer is away
    bird.birdc("enable", "xdplb4")
    await wait_for(lambda: bird.route(VIP) and bird.route(VIP2), timeout=20)
    assert bird.route(VIP).med == 100  # type: ignore[union-attr]


async def test_peer_state_changes_are_reported(bird: bird_lab.BirdLab) -> None:
    seen: list[bgp.PeerState] = []
    async with bgp.Speaker(speaker_config(bird), on_peer_change=seen.append) as speaker:
        watched: list[bgp.PeerState] = []

        async def watch() -> None:
            async for state in speaker.watch_peers():
                watched.append(state)

        watcher = asyncio.create_task(watch())
        await wait_for(lambda: established(speaker))
        bird.birdc("disable", "xdplb6")
        await wait_for(lambda: speaker.peers()[ipaddress.ip_address("::1")].state is bgp.PeerStatus.DOWN)
    await asyncio.wait_for(watcher, 5)  # the iterator ends when the speaker stops
    v6 = [state.state for state in seen if state.address == ipaddress.ip_address("::1")]
    assert bgp.PeerStatus.ESTABLISHED in v6
    assert v6[-1] is bgp.PeerStatus.DOWN
    assert [s for s in watched if s.address.version == 6][-1].state is bgp.PeerStatus.DOWN
    assert all(state.since.tzinfo is not None for state in seen)
