"""End to end in network namespaces: a client, the balancer with the real program, two real HTTP backends.

Backends carry the VIPs on loopback; the balancer learns their MACs from its own neighbour table; requests to the
VIPs reach both backends and the replies go straight back to the client, never through the balancer.
"""

import time
from collections import Counter
from ipaddress import ip_address

import pytest

import bpf
from balancer.lab.netns import Lab
from tests.bpf.conftest import get_page as _get

pytestmark = pytest.mark.privileged

VIP4, VIP6 = "192.0.2.100", "2001:db8:100::100"


def test_requests_to_the_vips_reach_every_backend_and_replies_bypass_the_balancer(lab: Lab) -> None:
    client = lab.add_host("client", ipv4="198.18.0.2", ipv6="2001:db8::2")
    lb = lab.add_host("lb", ipv4="198.18.0.5", ipv6="2001:db8::5")
    backends = [
        lab.add_host(name, ipv4=f"198.18.0.{11 + i}", ipv6=f"2001:db8::{11 + i:x}")
        for i, name in enumerate(("b1", "b2"))
    ]
    for host in backends:
        host.add_vip_on_loopback(VIP4)
        host.add_vip_on_loopback(VIP6)
        host.start_http_backend(host.name, 80)
    client.add_route(f"{VIP4}/32", via=lb.ipv4)
    client.add_route(f"{VIP6}/128", via=lb.ipv6)

    plane = bpf.DataPlane(bpf.DataPlaneSettings(flow_table_size=1024, max_services=8, max_backends=64))
    with lb.entered():
        plane.setup()
        try:
            assert plane.attach(lb.ifname, "generic") == "generic"
            for vip, family in ((VIP4, "ipv4"), (VIP6, "ipv6")):
                status = plane.set_service(
                    bpf.Service(
                        bpf.ServiceKey(ip_address(vip), 80, "tcp"),
                        tuple(bpf.Backend(ip_address(getattr(h, family))) for h in backends),
                        table_size=1021,
                    )
                )
                assert {b.reason for b in status.backends} == {"no MAC (neighbour unresolved)"}
                status = plane.set_service(
                    bpf.Service(
                        bpf.ServiceKey(ip_address(vip), 80, "tcp"),
                        tuple(bpf.Backend(ip_address(getattr(h, family)), mac=h.mac) for h in backends),
                        table_size=1021,
                    )
                )
                assert {b.reason for b in status.backends} == {"active"}
        except BaseException:
            plane.cleanup()
            raise

    try:
        answers = {vip: Counter(_get(client, vip) for _ in range(40)) for vip in (VIP4, VIP6)}
        with lb.entered():
            # The last connections' closing packets may still be on their way: the global and the per-backend
            # counters are two reads, so read until a packet arriving between them cannot tell them apart.
            counters = plane.read_counters()
            for _ in range(20):
                time.sleep(0.05)
                again = plane.read_counters()
                if again == counters:
                    break
                counters = again
    finally:
        with lb.entered():
            plane.cleanup()

    for vip in (VIP4, VIP6):
        assert set(answers[vip]) == {"b1", "b2"}, answers
    totals = counters.totals
    per_backend = sum(c.packets for c in counters.backends.values())
    assert totals.forwarded == per_backend >= 2 * 40 * 3, "each request's packets went through XDP_TX"
    assert sum(c.new_flows for c in counters.backends.values()) == 80, "one SYN per request"
    # Replies go from the backends straight to the client: the balancer receives hardly anything it does not
    # forward (neighbour discovery only), though the replies outnumber the requests.
    assert totals.rx_packets - totals.forwarded < 40, totals
