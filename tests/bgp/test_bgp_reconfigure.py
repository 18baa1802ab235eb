"""Speaker.reconfigure against real BIRD 2 peers on loopback: only the sessions of peers that change are touched.

Two BIRDs: ``bird`` (the fixture; its IPv4 session is the speaker's first peer) and a second one listening on
127.0.0.3, its session from the same speaker address. Evidence is BIRD's own: a protocol's ``since`` (when the
session last changed state), its debug log of routes added and removed, and ``Last error``.
"""

import asyncio
import ipaddress
import re
from collections.abc import Iterator

import pytest

import bgp
import config
from balancer.lab import bird_lab
from bgp import _exabgp_config, _reload
from tests.bgp import bgp_support
from tests.bgp.bgp_support import wait_for

VIP = ipaddress.ip_network("192.0.2.10/32")
VIP2 = ipaddress.ip_network("192.0.2.11/32")
SECOND = ipaddress.ip_address("127.0.0.3")  # the second BIRD's address


@pytest.fixture
def bird2() -> Iterator[bird_lab.BirdLab]:
    """A second BIRD on 127.0.0.3, with one passive IPv4 session to the speaker's 127.0.0.2."""
    bgp_support.need_bird()
    peer = bird_lab.BirdPeer(name="second", address=bgp_support.SPEAKER_V4, peer_as=bgp_support.LOCAL_AS,
                             local_address=SECOND, hold_time=9)  # fmt: skip
    with bird_lab.BirdLab(peers=[peer]) as lab:
        yield lab


def _first(bird: bird_lab.BirdLab) -> config.BgpPeer:
    return bgp_support.speaker_config(bird).peers[0]


def _second(bird2: bird_lab.BirdLab, **changes: object) -> config.BgpPeer:
    return config.BgpPeer.model_validate({
        "address": str(SECOND), "peer_as": bgp_support.LOCAL_AS, "local_address": str(bgp_support.SPEAKER_V4),
        "port": bird2.port, "hold_time": 9, **changes})  # fmt: skip


def _config(*peers: config.BgpPeer, **changes: object) -> config.BgpConfig:
    return config.BgpConfig.model_validate(
        {"local_as": bgp_support.LOCAL_AS, "router_id": "192.0.2.1", "peers": [p.model_dump() for p in peers],
         **changes})  # fmt: skip


def _established(lab: bird_lab.BirdLab, name: str) -> bird_lab.BirdProtocol | None:
    protocol = lab.protocols().get(name)
    return protocol if protocol is not None and protocol.bgp_state == "Established" else None


def _routes_removed(lab: bird_lab.BirdLab) -> list[str]:
    return [line for line in lab.log().splitlines() if "> removed" in line]


async def _running(bird: bird_lab.BirdLab, bgp_config: config.BgpConfig) -> bgp.Speaker:
    speaker = bgp.Speaker(bgp_config, restart_delay=0.2)
    await speaker.start()
    await wait_for(lambda: bgp_support.established(speaker))
    return speaker


async def test_adding_a_peer_leaves_the_first_session_alone_and_sends_the_new_one_the_routes(
    bird: bird_lab.BirdLab, bird2: bird_lab.BirdLab
) -> None:
    speaker = await _running(bird, _config(_first(bird)))
    try:
        speaker.set_routes({VIP: config.RouteAttributes(med=10), VIP2: config.RouteAttributes(med=20)})
        await wait_for(lambda: bird.route(VIP) and bird.route(VIP2))
        before = await wait_for(lambda: _established(bird, "xdplb4"))
        await asyncio.sleep(0.05)  # BIRD's times have millisecond resolution

        changes = await speaker.reconfigure(_config(_first(bird), _second(bird2)))

        assert changes == [f"peer {SECOND} added"]
        await wait_for(lambda: _established(bird2, "second"))
        assert (await wait_for(lambda: bird2.route(VIP))).med == 10
        assert (await wait_for(lambda: bird2.route(VIP2))).med == 20
        await wait_for(lambda: bgp_support.established(speaker))
        assert set(speaker.peers()) == {bgp_support.BIRD_V4, SECOND}
        after = _established(bird, "xdplb4")
        assert after is not None and after.same_since(before), "the first session never went down"
        assert _routes_removed(bird) == [], "the first BIRD never lost a route"
        assert bird.route(VIP).med == 10  # type: ignore[union-attr]
        # Both peers get what comes next.
        speaker.set_routes({VIP: config.RouteAttributes(med=11)})
        await wait_for(lambda: bird.route(VIP2) is None and bird2.route(VIP2) is None)
        assert bird2.route(VIP).med == bird.route(VIP).med == 11  # type: ignore[union-attr]
    finally:
        await speaker.stop()


async def test_removing_a_peer_closes_only_its_session_with_a_cease(
    bird: bird_lab.BirdLab, bird2: bird_lab.BirdLab
) -> None:
    speaker = await _running(bird, _config(_first(bird), _second(bird2)))
    try:
        speaker.set_routes({VIP: config.RouteAttributes(med=10)})
        await wait_for(lambda: bird.route(VIP) and bird2.route(VIP))
        before = await wait_for(lambda: _established(bird, "xdplb4"))
        await asyncio.sleep(0.05)

        changes = await speaker.reconfigure(_config(_first(bird)))

        assert changes == [f"peer {SECOND} removed"]
        await wait_for(lambda: bird2.route(VIP) is None)
        detail = await wait_for(lambda: (d := bird2.birdc("show", "protocols", "all", "second")) and
                                "Established" not in d and d)  # fmt: skip
        assert re.search(r"Last error:\s+Received: Peer de-configured", detail), detail
        assert list(speaker.peers()) == [bgp_support.BIRD_V4]
        await asyncio.sleep(1.5)  # ExaBGP would have retried by now
        assert "Established" not in bird2.birdc("show", "protocols", "all", "second"), "it did not come back"
        after = _established(bird, "xdplb4")
        assert after is not None and after.same_since(before)
        assert _routes_removed(bird) == [] and bird.route(VIP) is not None
    finally:
        await speaker.stop()


async def test_changing_a_peer_restarts_only_its_session(bird: bird_lab.BirdLab, bird2: bird_lab.BirdLab) -> None:
    speaker = await _running(bird, _config(_first(bird), _second(bird2)))
    try:
        speaker.set_routes({VIP: config.RouteAttributes(med=10)})
        await wait_for(lambda: bird.route(VIP) and bird2.route(VIP))
        before = await wait_for(lambda: _established(bird, "xdplb4"))
        before2 = await wait_for(lambda: _established(bird2, "second"))
        await asyncio.sleep(0.05)

        changes = await speaker.reconfigure(_config(_first(bird), _second(bird2, hold_time=6)))

        assert changes == [f"peer {SECOND} changed: hold_time"]
        detail = await wait_for(lambda: (d := bird2.birdc("show", "protocols", "all", "second")) and
                                re.search(r"Hold timer:\s+[\d.]+/6\n", d) and d)  # fmt: skip
        assert "Established" in detail
        assert (await wait_for(lambda: bird2.route(VIP))).med == 10
        after2 = _established(bird2, "second")
        assert after2 is not None and not after2.same_since(before2), "that session was restarted"
        after = _established(bird, "xdplb4")
        assert after is not None and after.same_since(before), "not the other one"
        assert _routes_removed(bird) == []
    finally:
        await speaker.stop()


async def test_a_new_router_id_recreates_every_session_and_replays_the_routes(
    bird: bird_lab.BirdLab, bird2: bird_lab.BirdLab
) -> None:
    speaker = await _running(bird, _config(_first(bird), _second(bird2)))
    try:
        speaker.set_routes({VIP: config.RouteAttributes(med=10)})
        await wait_for(lambda: bird.route(VIP) and bird2.route(VIP))
        changes = await speaker.reconfigure(_config(_first(bird), _second(bird2), router_id="192.0.2.2"))
        assert sorted(changes) == [f"peer {a} changed: router_id" for a in (bgp_support.BIRD_V4, SECOND)]
        for lab, name in ((bird, "xdplb4"), (bird2, "second")):
            detail = await wait_for(lambda: (d := lab.birdc("show", "protocols", "all", name)) and
                                    "Neighbor ID:      192.0.2.2" in d and "Established" in d and d)  # fmt: skip
            assert detail
            assert (await wait_for(lambda: lab.route(VIP))).med == 10, "routes replayed to the new neighbour"
    finally:
        await speaker.stop()


async def test_new_default_attributes_reannounce_in_place(bird: bird_lab.BirdLab) -> None:
    old = _config(_first(bird), attributes={"med": 10, "communities": ["65000:1"]})
    speaker = await _running(bird, old)
    try:
        speaker.set_routes({VIP: old.attributes})
        await wait_for(lambda: bird.route(VIP))
        before = await wait_for(lambda: _established(bird, "xdplb4"))
        await asyncio.sleep(0.05)
        new = _config(_first(bird), attributes={"med": 20, "communities": ["65000:2"]})

        assert await speaker.reconfigure(new) == [], "attributes are not the speaker's business"
        speaker.set_routes({VIP: new.attributes})  # what the daemon does with them

        route = await wait_for(lambda: (r := bird.route(VIP)) and r.med == 20 and r)
        assert route.communities == ("65000:2",)
        after = _established(bird, "xdplb4")
        assert after is not None and after.same_since(before)
        assert _routes_removed(bird) == [], "replaced, never withdrawn"
    finally:
        await speaker.stop()


async def test_a_config_that_fails_leaves_the_old_one_in_force(
    bird: bird_lab.BirdLab, bird2: bird_lab.BirdLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = _config(_first(bird))
    speaker = await _running(bird, old)
    try:
        speaker.set_routes({VIP: config.RouteAttributes(med=10)})
        await wait_for(lambda: bird.route(VIP))
        before = await wait_for(lambda: _established(bird, "xdplb4"))
        conf = speaker._workdir / "exabgp.conf"  # type: ignore[operator]
        text = conf.read_text()
        await asyncio.sleep(0.05)

        # Refused by the driver's own checks, ExaBGP never asked.
        too_long = _config(_first(bird), _second(bird2, password="x" * 81))
        with pytest.raises(bgp.ReconfigureError, match=r"bgp.peers\[1\].password: .*at most 80 bytes") as refused:
            await speaker.reconfigure(too_long)
        assert refused.value.problems and "x" * 81 not in str(refused.value)
        with pytest.raises(bgp.ReconfigureError, match="passive"):
            await speaker.reconfigure(_config(_first(bird), _second(bird2, passive=True)))

        # Refused by ExaBGP (a neighbour option it does not know stands for whatever the checks miss): a throwaway
        # `exabgp validate` refuses it, and the running ExaBGP never sees it.
        render = _exabgp_config.render

        def bad(*args: object, **kwargs: object) -> str:
            text = render(*args, **kwargs)  # type: ignore[arg-type]
            return text.replace('md5-password "secret-pw";', 'md5-password "secret-pw";\n    frobnicate true;')

        monkeypatch.setattr(_exabgp_config, "render", bad)
        wanted = _config(_first(bird), _second(bird2, password="secret-pw"))
        with pytest.raises(bgp.ReconfigureError, match="exabgp refused the new config") as failed:
            await speaker.reconfigure(wanted)
        assert "secret-pw" not in str(failed.value)
        assert conf.read_text() == text

        # Were it to reach the running ExaBGP, its reload fails, rolls back, and the file is put back for its next
        # restart; and the patched ExaBGP cleans its parser up, so the next reload works (see below).
        async def passes(*args: object, **kwargs: object) -> None:
            pass

        monkeypatch.setattr(_reload, "validate", passes)
        with pytest.raises(bgp.ReconfigureError, match="exabgp refused the new config") as failed:
            await speaker.reconfigure(wanted)
        assert "secret-pw" not in str(failed.value)
        monkeypatch.undo()
        assert conf.read_text() == text
        assert list(speaker.peers()) == [bgp_support.BIRD_V4]

        await asyncio.sleep(1.0)
        after = _established(bird, "xdplb4")
        assert after is not None and after.same_since(before), "the session kept running"
        assert "Established" not in bird2.birdc("show", "protocols"), "the peer of the refused config never came"
        # The old config still works, and a good one can follow.
        speaker.set_routes({VIP: config.RouteAttributes(med=12)})
        await wait_for(lambda: (r := bird.route(VIP)) and r.med == 12)
        assert await speaker.reconfigure(_config(_first(bird), _second(bird2))) == [f"peer {SECOND} added"]
        assert (await wait_for(lambda: bird2.route(VIP))).med == 12
    finally:
        await speaker.stop()


async def test_a_peer_can_be_added_while_another_is_down_with_routes_waiting(
    bird: bird_lab.BirdLab, bird2: bird_lab.BirdLab
) -> None:
    """ExaBGP skips a reload while UPDATEs wait for any peer, a down one too (until its next connect retry): the
    speaker asks again until ExaBGP does it (in the runs made while writing this, twice: event=exabgp_reload_unanswered
    in the log)."""
    speaker = await _running(bird, _config(_first(bird)))
    try:
        speaker.set_routes({VIP: config.RouteAttributes(med=10)})
        await wait_for(lambda: bird.route(VIP))
        bird.birdc("disable", "xdplb4")
        await wait_for(lambda: speaker.peers()[bgp_support.BIRD_V4].state is not bgp.PeerStatus.ESTABLISHED)
        await asyncio.sleep(1.5)  # into ExaBGP's retry back-off
        speaker.set_routes({VIP: config.RouteAttributes(med=10), VIP2: config.RouteAttributes(med=20)})
        assert await speaker.flush()  # ExaBGP holds them for the down peer: an UPDATE waiting

        assert await speaker.reconfigure(_config(_first(bird), _second(bird2))) == [f"peer {SECOND} added"]

        assert (await wait_for(lambda: bird2.route(VIP2))).med == 20
        assert bird2.route(VIP) is not None
        bird.birdc("enable", "xdplb4")
        await wait_for(lambda: bird.route(VIP2), timeout=15)
    finally:
        await speaker.stop()
