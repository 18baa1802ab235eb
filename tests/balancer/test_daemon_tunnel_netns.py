"""Layer-3 DSR end to end: the real daemon sends a VIP's flows to backends a router away, one in IPIP and one in
GUE; each backend takes its tunnel off with ``xdplb decap`` (the kernel here has no tunnel modules) and answers the
client straight back through the router, past the balancer."""

from collections import Counter
from pathlib import Path

import pytest

import config
from balancer.lab.netns import Lab
from bpf import decap
from tests.balancer.daemon_thread import DaemonThread
from tests.balancer.test_daemon_netns import VIP, _get, _wait

pytestmark = pytest.mark.privileged


def test_routed_backends_in_ipip_and_gue(lab: Lab, tmp_path: Path) -> None:
    routed = lab.add_segment()
    client = lab.add_host("client", ipv4="198.18.0.2")
    lb = lab.add_host("lb", ipv4="198.18.0.5")
    router = lab.add_host("router", ipv4="198.18.0.1")
    router.add_interface(routed, ipv4="198.18.1.1")
    router.set_sysctl("net.ipv4.ip_forward", 1)
    backends = [lab.add_host(f"rb{i}", ipv4=f"198.18.1.1{i}", segment=routed) for i in (1, 2)]
    for host in backends:
        host.add_route("198.18.0.0/24", via="198.18.1.1")
        host.add_vip_on_loopback(VIP)
        host.start_http_backend(host.name, 80)
        with host.entered():
            decap.attach(host.ifname, mode="generic")
    client.add_route(f"{VIP}/32", via=lb.ipv4)
    lb.add_route("198.18.1.0/24", via=router.ipv4)
    lb.set_sysctl("net.ipv4.conf.all.forwarding", 1)  # bpf_fib_lookup wants it, in the balancer's namespace only

    path = tmp_path / "xdplb.yaml"
    path.write_text(f"""
interfaces: [{{name: {lb.ifname}, mode: generic}}]
dataplane: {{flow_table_size: 4096, tunnel_source_v4: {lb.ipv4}}}
api: {{listen: "127.0.0.1:9180"}}
services:
  - name: web
    vip: {VIP}
    port: 80
    forwarding: gue
    table_size: 1021
    checks: [{{type: http, path: /healthz, timing: {{interval: 0.3, timeout: 0.25, rise: 1, fall: 2}}}}]
    backends:
      - {{address: {backends[0].ipv4}, forwarding: ipip}}
      - {{address: {backends[1].ipv4}}}
""")
    config.load_config(path)
    runner = DaemonThread(lb, path, start_grace=10.0, drain_seconds=0.2)
    runner.start()
    try:
        _wait(
            "both routed backends active",
            lambda: [b.dataplane for b in runner.snapshot().services[0].backends] == ["active", "active"],
        )
        assert [b.forwarding for b in runner.snapshot().services[0].backends] == ["ipip", "gue"]
        answers = Counter(_get(client, VIP) for _ in range(30))
        assert set(answers) == {"rb1", "rb2"}, answers
        counters = {}
        for host in backends:
            with host.entered():
                counters[host.name] = decap.status(host.ifname).counters
        assert counters["rb1"].ipip >= answers["rb1"] and counters["rb1"].gue == 0
        assert counters["rb2"].gue >= answers["rb2"] and counters["rb2"].ipip == 0
        totals = runner.snapshot().totals
        assert totals["tunnelled"] >= 30 * 3 and totals["drop_no_route"] == 0  # SYN, request and ACKs: each one
    finally:
        runner.stop()


VIP6 = "2001:db8:100::100"


def test_routed_ipv6_backends_in_gue_and_an_ipv4_vip_in_ipv6(lab: Lab, tmp_path: Path) -> None:
    """The same through IPv6: an IPv6 VIP over GUE in IPv6 (6 in 6), and an IPv4 VIP over IPIP in IPv6 (4 in 6)
    to the same backends' IPv6 addresses; the next hops from the IPv6 FIB."""
    routed = lab.add_segment()
    client = lab.add_host("client", ipv4="198.18.0.2", ipv6="2001:db8::2")
    lb = lab.add_host("lb", ipv4="198.18.0.5", ipv6="2001:db8::5")
    router = lab.add_host("router", ipv4="198.18.0.1", ipv6="2001:db8::1")
    router.add_interface(routed, ipv4="198.18.1.1", ipv6="2001:db8:1::1")
    router.set_sysctl("net.ipv4.ip_forward", 1)
    router.set_sysctl("net.ipv6.conf.all.forwarding", 1)
    backends = [lab.add_host(f"rb{i}", ipv4=f"198.18.1.1{i}", ipv6=f"2001:db8:1::1{i}", segment=routed) for i in (1, 2)]
    for host in backends:
        host.add_route("198.18.0.0/24", via="198.18.1.1")
        host.add_route("2001:db8::/64", via="2001:db8:1::1")
        for vip in (VIP, VIP6):
            host.add_vip_on_loopback(vip)
        host.start_http_backend(host.name, 80)
        with host.entered():
            decap.attach(host.ifname, mode="generic")
    client.add_route(f"{VIP}/32", via=lb.ipv4)
    client.add_route(f"{VIP6}/128", via="2001:db8::5")
    lb.add_route("198.18.1.0/24", via=router.ipv4)
    lb.add_route("2001:db8:1::/64", via="2001:db8::1")
    for name in ("net.ipv4.conf.all.forwarding", "net.ipv6.conf.all.forwarding"):
        lb.set_sysctl(name, 1)

    members = "\n".join(f"      - {b.ipv6}" for b in backends)
    path = tmp_path / "xdplb.yaml"
    path.write_text(f"""
interfaces: [{{name: {lb.ifname}, mode: generic}}]
dataplane: {{flow_table_size: 4096, tunnel_source_v6: "2001:db8::5"}}
api: {{listen: "127.0.0.1:9180"}}
policies:
  web: {{checks: [{{type: http, path: /healthz, timing: {{interval: 0.3, timeout: 0.25, rise: 1, fall: 2}}}}]}}
services:
  - name: web6
    vip: "{VIP6}"
    port: 80
    forwarding: gue
    table_size: 1021
    policy: web
    backends:
{members}
  - name: web4in6
    vip: {VIP}
    port: 80
    forwarding: ipip
    table_size: 1021
    policy: web
    backends:
{members}
""")
    config.load_config(path)
    runner = DaemonThread(lb, path, start_grace=10.0, drain_seconds=0.2)
    runner.start()
    try:
        _wait(
            "every routed backend active",
            lambda: [b.dataplane for s in runner.snapshot().services for b in s.backends] == ["active"] * 4,
        )
        for vip in (VIP6, VIP):
            answers = Counter(_get(client, vip) for _ in range(24))
            assert set(answers) == {"rb1", "rb2"}, (vip, answers)
        counters = []
        for host in backends:
            with host.entered():
                counters.append(decap.status(host.ifname).counters)
        assert all(c.gue > 0 and c.ipip > 0 for c in counters), counters
    finally:
        runner.stop()
