"""The demo's shape in a namespace this test makes: two xdplb speakers, one BIRD that installs an ECMP route.

Needs root (namespaces, veth); fails instead of skipping when CI=true.
"""

import ipaddress
import os
import random
import subprocess
from collections.abc import Iterator

import pytest

import bgp
import config
from balancer import lab_bird
from tests.bgp.bgp_support import LOCAL_AS, need_bird, wait_for

VIP = ipaddress.ip_network("192.0.2.50/32")


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def lab_net() -> Iterator[tuple[str, ipaddress.IPv4Network]]:
    """A namespace with a veth to the root namespace; a random /29 of 198.19.0.0/16: .1 and .3 here, .2 there."""
    need_bird()
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("needs root for namespaces, and CI=true")
        pytest.skip("needs root for namespaces")
    tag = f"{os.getpid() % 10000:04d}{random.randrange(16**3):03x}"
    netns, here, there = f"xdplb-bgp-{tag}", f"xb{tag}a", f"xb{tag}b"
    net = ipaddress.ip_network(f"198.19.{random.randrange(256)}.{8 * random.randrange(32)}/29")
    hosts = list(net.hosts())
    _ip("netns", "add", netns)
    try:
        _ip("link", "add", here, "type", "veth", "peer", "name", there, "netns", netns)
        _ip("addr", "add", f"{hosts[0]}/29", "dev", here)
        _ip("addr", "add", f"{hosts[2]}/29", "dev", here)
        _ip("link", "set", here, "up")
        _ip("-n", netns, "addr", "add", f"{hosts[1]}/29", "dev", there)
        _ip("-n", netns, "link", "set", there, "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        yield netns, net
    finally:
        subprocess.run(["ip", "link", "del", here], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)


async def test_two_nodes_ecmp_route_in_the_namespace_kernel(lab_net: tuple[str, ipaddress.IPv4Network]) -> None:
    netns, net = lab_net
    node_a, router, node_b = list(net.hosts())[:3]
    peers = [
        lab_bird.BirdPeer(name="node_a", address=node_a, peer_as=LOCAL_AS, local_address=router, multihop=False),
        lab_bird.BirdPeer(name="node_b", address=node_b, peer_as=LOCAL_AS, local_address=router, multihop=False),
    ]
    with lab_bird.BirdLab(peers=peers, netns=netns, kernel_merge_paths=True, router_id=str(router)) as bird:

        def node(address: ipaddress.IPv4Address) -> bgp.Speaker:
            peer = config.BgpPeer(address=router, peer_as=LOCAL_AS, local_address=address, port=bird.port)
            return bgp.Speaker(config.BgpConfig(local_as=LOCAL_AS, router_id=address, peers=(peer,)))

        async with node(node_a) as a, node(node_b) as b:
            await a.announce(VIP, config.RouteAttributes(med=10))
            await b.announce(VIP, config.RouteAttributes(med=10))
            routes = await wait_for(lambda: len(r := bird.routes(VIP)) == 2 and r)
            assert {route.gateways for route in routes} == {(node_a,), (node_b,)}
            kernel = await wait_for(lambda: (out := _ip("-n", netns, "route", "show", str(VIP))).count("nexthop") == 2 and out)
            assert f"via {node_a}" in kernel and f"via {node_b}" in kernel
            await b.withdraw(VIP)
            single = await wait_for(lambda: "nexthop" not in (out := _ip("-n", netns, "route", "show", str(VIP))) and out)
            assert f"via {node_a}" in single
        await wait_for(lambda: _ip("-n", netns, "route", "show", str(VIP)).strip() == "")
