"""Several segments: a host with a leg on each, hosts on the second segment, and XDP_PASS on a host's veth peers
(what native XDP out of a veth needs)."""

import pytest

from balancer.lab.netns import Lab, LabError, segment_subnets

pytestmark = pytest.mark.privileged


def test_a_host_reaches_hosts_of_two_segments_through_its_two_legs(lab: Lab) -> None:
    segment = lab.add_segment()
    assert [str(net) for net in segment_subnets(segment)] == ["198.18.1.0/24", "2001:db8:1::/64"]
    router = lab.add_host("router", ipv4="198.18.0.1")
    leg = router.add_interface(segment, ipv4="198.18.1.1", ipv6="2001:db8:1::1")
    far = lab.add_host("far", ipv4="198.18.1.20", segment=segment)
    near = lab.add_host("near", ipv4="198.18.0.20")
    assert [i.ifindex for i in router.interfaces] == [router.ifindex, leg.ifindex] and leg.segment == segment
    with pytest.raises(LabError, match="not a host address of 198.18.1.0/24"):
        lab.add_host("wrong", ipv4="198.18.0.30", segment=segment)
    with pytest.raises(LabError, match="no segment 2"):
        lab.add_host("none", ipv4="198.18.2.30", segment=2)

    with far.start_http_backend("far", 80), near.start_http_backend("near", 80):
        for address, name in ((far.ipv4, "far"), (near.ipv4, "near")):
            result = router.run(
                [
                    "python3",
                    "-c",
                    f"import urllib.request as u; print(u.urlopen('http://{address}/',"
                    " timeout=5).read().decode().strip())",
                ],
                capture_output=True,
                text=True,
            )
            assert result.stdout.strip() == name, result


def test_pass_on_peers_puts_a_native_xdp_pass_program_on_every_bridge_port_of_the_host(lab: Lab) -> None:
    segment = lab.add_segment()
    lb = lab.add_host("lb", ipv4="198.18.0.5")
    lb.add_interface(segment, ipv4="198.18.1.5")
    other = lab.add_host("other", ipv4="198.18.0.6")
    lb.pass_on_peers()
    with lab.switch_entered():
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            modes = {}
            for port in [i.port for i in lb.interfaces] + [other.port]:
                link = ipr.get_links(ipr.link_lookup(ifname=port)[0])[0]
                modes[port] = link.get_nested("IFLA_XDP", "IFLA_XDP_ATTACHED")
    assert [modes[i.port] for i in lb.interfaces] == ["xdp", "xdp"], modes  # native (driver) mode
    assert modes[other.port] in (None, "none", 0), "other hosts' ports are left alone"
