"""Tunnelled backends through the data plane's API: what it refuses, what it reports, and how the cached next hop
follows the kernel's routes (the frames themselves are packet cases: fixtures/tunnel.py)."""

import time
from ipaddress import ip_address
from typing import Any

import pytest
from scapy.layers.inet import TCP
from scapy.layers.l2 import Ether

import bpf
from balancer.lab.netns import Host
from bpf import testing
from tests.bpf import world
from tests.bpf.fixtures.case import PAYLOAD, eth, v4
from tests.bpf.traffic import one_cpu


def _run(plane: bpf.DataPlane, packet: bytes) -> testing.TestRun:
    return testing.prog_test_run(plane.prog_fd, packet, ingress_ifindex=world.INGRESS_IFINDEX)


def test_a_tunnel_needs_a_source_of_its_family(plane: bpf.DataPlane) -> None:
    """Refused whole, naming what is missing; the service is not added and the others serve on."""
    plane.set_tunnel(world.TUNNEL_SOURCE4, None)
    key = bpf.ServiceKey(world.VIP4, 110, "tcp")
    with pytest.raises(bpf.DataPlaneError, match="ipip needs a tunnel source of IPv6"):
        plane.set_service(bpf.Service(key, (world.T6_IPIP.backend(),)))
    assert key not in plane.services
    assert plane.set_service(world.SERVICES["ipip44"]).backends[0].state is bpf.BackendState.ACTIVE


def test_a_tunnelled_backend_has_no_mac_and_is_active(plane: bpf.DataPlane) -> None:
    status = plane.set_service(world.SERVICES["gue46"])
    (backend,) = status.backends
    assert (backend.state, backend.mac, backend.table_entries) == (bpf.BackendState.ACTIVE, None, world.TABLE_SIZE)


@pytest.mark.parametrize("field", [{"vlan": 7}, {"ifindex": 3}])
def test_a_tunnelled_backend_takes_no_interface_or_vlan(field: dict[str, Any]) -> None:
    backend = bpf.Backend(ip_address("198.18.5.20"), tunnel="ipip", **field)
    with pytest.raises(bpf.DataPlaneError, match="the FIB picks its interface"):
        bpf.Service(bpf.ServiceKey(world.VIP4, 110, "tcp"), (backend,)).validate()


def test_the_next_hop_follows_a_route_change_within_a_second(packet_plane: bpf.DataPlane, egress_netns: Host) -> None:
    """The cached next hop is looked up again after NEXT_HOP_TTL_NS: a route moved to another gateway takes the
    frames there, and a route removed drops them (counted), without a word to the data plane."""
    packet = bytes(eth() / v4() / TCP(sport=40201, dport=100, flags="A") / PAYLOAD)
    other_gateway, other_mac = "198.18.1.253", "02:00:00:00:00:fd"
    with egress_netns.entered(), one_cpu():  # the cache is per CPU
        run = _run(packet_plane, packet)
        assert (run.verdict, Ether(run.data).dst) == ("XDP_REDIRECT", world.GATEWAY_MAC)
        with egress_netns.ipr() as ipr:
            ipr.neigh("add", dst=other_gateway, lladdr=other_mac, ifindex=world.EGRESS_IFINDEX, state=0x80)
            ipr.route("replace", dst="198.18.5.0/24", gateway=other_gateway)
        try:
            assert Ether(_run(packet_plane, packet).data).dst == world.GATEWAY_MAC, "cached within the second"
            time.sleep(1.1)
            run = _run(packet_plane, packet)
            assert (run.verdict, Ether(run.data).dst) == ("XDP_REDIRECT", other_mac)
            with egress_netns.ipr() as ipr:
                ipr.route("del", dst="198.18.5.0/24", gateway=other_gateway)
            time.sleep(1.1)
            before = packet_plane.read_counters().totals.drop_no_route
            assert _run(packet_plane, packet).verdict == "XDP_DROP"
            assert packet_plane.read_counters().totals.drop_no_route == before + 1
        finally:
            with egress_netns.ipr() as ipr:
                ipr.route("replace", dst="198.18.5.0/24", gateway=str(world.GATEWAY4))
                ipr.neigh("del", dst=other_gateway, ifindex=world.EGRESS_IFINDEX)


def test_forwarding_off_drops_tunnelled_frames_as_no_route(packet_plane: bpf.DataPlane, egress_netns: Host) -> None:
    """bpf_fib_lookup refuses when the ingress interface does not forward: said in bpf/README.md, counted here."""
    spec = bpf.Service(bpf.ServiceKey(world.VIP4, 111, "tcp"), (world.T4_IPIP.backend(),))
    packet = bytes(eth() / v4() / TCP(sport=40202, dport=111, flags="A") / PAYLOAD)
    egress_netns.set_sysctl("net.ipv4.conf.all.forwarding", 0)
    try:
        with egress_netns.entered():
            packet_plane.set_service(spec)  # a new slot: nothing cached for it
            before = packet_plane.read_counters().totals.drop_no_route
            assert _run(packet_plane, packet).verdict == "XDP_DROP"
            assert packet_plane.read_counters().totals.drop_no_route == before + 1
    finally:
        egress_netns.set_sysctl("net.ipv4.conf.all.forwarding", 1)
    with egress_netns.entered():
        assert _run(packet_plane, packet).verdict == "XDP_REDIRECT", "not cached: forwarding on, it goes"
