"""End to end in network namespaces: one VIP, backends behind two interfaces of the balancer.

Segment 0 holds the client, the balancer's first interface and b1; segment 1 the balancer's second interface and
b2. Frames for b1 leave by XDP_TX, frames for b2 by XDP_REDIRECT out of the second interface. Each backend's
interface is the one its neighbour entry is on, read from the balancer's own neighbour table after a probe (what
the daemon learns). b2 answers the client over segment 1 (the client has a leg there too, as a router would
give it), never through the balancer. Run in generic mode and in native mode; native mode needs XDP_PASS on the
veths' peers (``Host.pass_on_peers``) and no partial checksums from the client (field notes).
"""

import socket
import time
from collections import Counter
from ipaddress import ip_address

import pytest

import bpf
from balancer.lab.netns import Host, Lab
from tests.bpf.conftest import get_page as _get

pytestmark = pytest.mark.privileged

VIP4, VIP6 = "192.0.2.100", "2001:db8:100::100"
REQUESTS = 40


def _learn(lb: Host, address: str) -> tuple[str, int]:
    """The backend's MAC and the balancer's interface it is on, from the balancer's neighbour table."""
    family = socket.AF_INET if ip_address(address).version == 4 else socket.AF_INET6
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with lb.entered(), socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"", (address, 9))  # makes the kernel resolve it
        with lb.ipr() as ipr:
            for entry in ipr.get_neighbours(family=family, dst=address):
                if entry.get_attr("NDA_LLADDR") and entry["state"] & 0xDE:  # a usable state
                    return entry.get_attr("NDA_LLADDR"), entry["ifindex"]
        time.sleep(0.05)
    raise AssertionError(f"{address} did not resolve")


@pytest.mark.parametrize("mode", ["generic", "native"])
def test_one_vip_reaches_backends_behind_two_interfaces_and_replies_bypass_the_balancer(
    lab: Lab, mode: bpf.AttachMode
) -> None:
    segment = lab.add_segment()
    client = lab.add_host("client", ipv4="198.18.0.2", ipv6="2001:db8::2")
    client.add_interface(segment, ipv4="198.18.1.2", ipv6="2001:db8:1::2")
    lb = lab.add_host("lb", ipv4="198.18.0.5", ipv6="2001:db8::5")
    lb_second = lb.add_interface(segment, ipv4="198.18.1.5", ipv6="2001:db8:1::5")
    b1 = lab.add_host("b1", ipv4="198.18.0.11", ipv6="2001:db8::11")
    b2 = lab.add_host("b2", ipv4="198.18.1.12", ipv6="2001:db8:1::12", segment=segment)
    b2.add_route("198.18.0.0/24", via="198.18.1.2")  # replies to the client: over segment 1, not the balancer
    b2.add_route("2001:db8::/64", via="2001:db8:1::2")
    for conf in ("all", "default", *(i.ifname for i in client.interfaces)):
        client.set_sysctl(f"net.ipv4.conf.{conf}.rp_filter", 0)  # replies from b2 arrive on its other leg
    for host in (b1, b2):
        host.add_vip_on_loopback(VIP4)
        host.add_vip_on_loopback(VIP6)
        host.start_http_backend(host.name, 80)
    client.add_route(f"{VIP4}/32", via=lb.ipv4)
    client.add_route(f"{VIP6}/128", via=lb.ipv6)
    if mode == "native":
        lb.pass_on_peers()
        client.disable_tx_checksum_offload()

    hops = {(h.name, family): _learn(lb, getattr(h, family)) for h in (b1, b2) for family in ("ipv4", "ipv6")}
    assert {hops[("b1", f)][1] for f in ("ipv4", "ipv6")} == {lb.ifindex}
    assert {hops[("b2", f)][1] for f in ("ipv4", "ipv6")} == {lb_second.ifindex}

    plane = bpf.DataPlane(bpf.DataPlaneSettings(flow_table_size=1024, max_services=8, max_backends=64))
    with lb.entered():
        plane.setup()
        try:
            for interface in lb.interfaces:
                assert plane.attach(interface.ifname, mode) == mode
            for vip, family in ((VIP4, "ipv4"), (VIP6, "ipv6")):
                backends = tuple(
                    bpf.Backend(
                        ip_address(getattr(h, family)), mac=hops[(h.name, family)][0], ifindex=hops[(h.name, family)][1]
                    )
                    for h in (b1, b2)
                )
                status = plane.set_service(
                    bpf.Service(bpf.ServiceKey(ip_address(vip), 80, "tcp"), backends, table_size=1021)
                )
                assert {b.reason for b in status.backends} == {"active"}
        except BaseException:
            plane.cleanup()
            raise

    try:
        answers = {vip: Counter(_get(client, vip) for _ in range(REQUESTS)) for vip in (VIP4, VIP6)}
        with lb.entered():
            counters = plane.read_counters()
    finally:
        with lb.entered():
            plane.cleanup()

    for vip in (VIP4, VIP6):
        assert set(answers[vip]) == {"b1", "b2"}, answers
    totals = counters.totals
    assert totals.redirected > 0 and totals.forwarded - totals.redirected > 0, totals
    assert totals.drop_no_egress == totals.drop_no_source_mac == 0, totals
    assert sum(c.new_flows for c in counters.backends.values()) == 2 * REQUESTS, "one SYN per request"
    # Replies go from the backends straight to the client: the balancer receives hardly anything it does not
    # forward (neighbour discovery only).
    assert totals.rx_packets - totals.forwarded < REQUESTS, totals
