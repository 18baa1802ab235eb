"""The BIRD lab runner, and the two-node shape of the demo: two speakers peering with one BIRD."""

import asyncio
import ipaddress

import pytest

import bgp
import config
from balancer.lab import bird_lab
from tests.bgp.bgp_support import LOCAL_AS, need_bird, wait_for

VIP = ipaddress.ip_network("192.0.2.30/32")

SHOW_ROUTE = """Table master4:
192.0.2.30/32        unicast [node_a 08:10:40.503 from 198.18.0.2] * (100) [AS65001i]
\tvia 198.18.0.2 on veth-a
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.as_path: 65001
\tBGP.next_hop: 198.18.0.2
\tBGP.med: 10
\tBGP.local_pref: 100
\tBGP.community: (65000,1) (65000,20)
\tBGP.large_community: (4200000001, 1, 2) (1, 2, 3)
                     unicast [node_b 08:10:41.000 from 198.18.0.3] (100/?) [AS65001i]
\tvia 198.18.0.3 on veth-b
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.as_path: 65001 4200000001
\tBGP.next_hop: 198.18.0.3 fe80::1
\tBGP.local_pref: 100

Table master6:
2001:db8::30/128     unreachable [node_c 08:10:42.000] * (100) [i]
\tType: BGP univ
"""


def test_parse_routes_reads_attributes_and_second_paths() -> None:
    first, second, third = bird_lab.parse_routes(SHOW_ROUTE)
    assert (first.prefix, first.protocol, first.primary, first.kind) == (VIP, "node_a", True, "unicast")
    assert first.gateways == (ipaddress.ip_address("198.18.0.2"),)
    assert (first.med, first.local_pref, first.as_path) == (10, 100, (65001,))
    assert first.communities == ("65000:1", "65000:20")
    assert first.large_communities == ("4200000001:1:2", "1:2:3")
    assert (second.prefix, second.protocol, second.primary, second.source) == (VIP, "node_b", False, "198.18.0.3")
    assert second.next_hop == ipaddress.ip_address("198.18.0.3")
    assert (second.med, second.communities, second.as_path) == (None, (), (65001, 4200000001))
    assert (third.prefix, third.kind, third.source) == (ipaddress.ip_network("2001:db8::30/128"), "unreachable", None)


def test_config_has_no_kernel_protocol_and_kernel_needs_a_namespace() -> None:
    peer = bird_lab.BirdPeer(name="a", address=ipaddress.ip_address("127.0.0.2"), peer_as=65001, password="pw")
    lab = bird_lab.BirdLab(peers=[peer])
    try:
        text = lab.config_text()
        assert "protocol kernel" not in text
        for line in ("strict bind;", "multihop;", "error wait time 1, 2;", "passive on;", 'password "pw";'):
            assert line in text
        assert f"local 127.0.0.1 port {lab.port} as 65001;" in text
        in_ns = bird_lab.BirdLab(peers=[peer], netns="xdplb-test-ns", kernel_merge_paths=True)
        assert "merge paths on;" in in_ns.config_text()
        assert in_ns.port == 179
        in_ns.stop()
    finally:
        lab.stop()
    with pytest.raises(bird_lab.BirdError, match="namespace"):
        bird_lab.BirdLab(peers=[peer], kernel_merge_paths=True)


async def test_two_speakers_one_bird_both_paths_then_one() -> None:
    need_bird()
    addresses = [ipaddress.ip_address("127.0.0.2"), ipaddress.ip_address("127.0.0.3")]
    peers = [bird_lab.BirdPeer(name=f"node{i}", address=a, peer_as=LOCAL_AS) for i, a in enumerate(addresses)]
    with bird_lab.BirdLab(peers=peers) as bird:

        def node(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bgp.Speaker:
            peer = config.BgpPeer(
                address=ipaddress.ip_address("127.0.0.1"), peer_as=LOCAL_AS, local_address=address, port=bird.port
            )
            return bgp.Speaker(config.BgpConfig(local_as=LOCAL_AS, router_id=str(address), peers=(peer,)))

        async with node(addresses[0]) as one, node(addresses[1]) as two:
            await one.announce(VIP, config.RouteAttributes(med=10))
            await two.announce(VIP, config.RouteAttributes(med=10))
            routes = await wait_for(lambda: len(r := bird.routes(VIP)) == 2 and r)
            assert {route.protocol for route in routes} == {"node0", "node1"}
            assert {str(route.next_hop) for route in routes} == {"127.0.0.2", "127.0.0.3"}
            assert sum(route.primary for route in routes) == 1
            await one.withdraw(VIP)
            left = await wait_for(lambda: len(r := bird.routes(VIP)) == 1 and r)
            assert left[0].protocol == "node1"


async def test_md5_protected_session() -> None:
    need_bird()
    peer = bird_lab.BirdPeer(
        name="secured", address=ipaddress.ip_address("127.0.0.2"), peer_as=LOCAL_AS, password="xdplb md5"
    )
    with bird_lab.BirdLab(peers=[peer]) as bird:
        bgp_peer = config.BgpPeer(
            address=ipaddress.ip_address("127.0.0.1"),
            peer_as=LOCAL_AS,
            local_address=ipaddress.ip_address("127.0.0.2"),
            port=bird.port,
            password="xdplb md5",
        )
        cfg = config.BgpConfig(local_as=LOCAL_AS, router_id="192.0.2.1", peers=(bgp_peer,))
        async with bgp.Speaker(cfg) as speaker:
            await speaker.announce(VIP, config.RouteAttributes())
            await wait_for(lambda: bird.route(VIP))
        wrong = cfg.model_copy(update={"peers": (bgp_peer.model_copy(update={"password": "wrong"}),)})
        async with bgp.Speaker(wrong) as speaker:
            await speaker.announce(VIP, config.RouteAttributes())
            await wait_for(lambda: "Established" not in bird.protocols()["secured"].info)
            await asyncio.sleep(1.0)
            assert bird.route(VIP) is None, "a wrong MD5 password gets no session"
            assert speaker.peers()[ipaddress.ip_address("127.0.0.1")].state is not bgp.PeerStatus.ESTABLISHED
