"""The real daemon with two interfaces: backends behind both, one VIP.

The balancer has a leg on two lab segments. b1 is on the first, b2 on the second (its interface learnt from the
balancer's neighbour table), b3 on the second too and pinned there with ``interface:``. Requests to the VIP reach
all three; frames for b2 and b3 leave by XDP_REDIRECT, and their replies go to the client over the second
segment, never through the balancer.
"""

from collections import Counter
from pathlib import Path

import pytest

import config
from balancer.lab.netns import Lab
from tests.balancer.daemon_thread import DaemonThread
from tests.balancer.test_daemon_netns import VIP, _get, _wait

pytestmark = pytest.mark.privileged
REQUESTS = 45


def test_daemon_balances_one_vip_over_backends_behind_two_interfaces(lab: Lab, tmp_path: Path) -> None:
    segment = lab.add_segment()
    client = lab.add_host("client", ipv4="198.18.0.2")
    client.add_interface(segment, ipv4="198.18.1.2")
    lb = lab.add_host("lb", ipv4="198.18.0.5")
    second = lb.add_interface(segment, ipv4="198.18.1.5")
    b1 = lab.add_host("b1", ipv4="198.18.0.11")
    b2 = lab.add_host("b2", ipv4="198.18.1.12", segment=segment)
    b3 = lab.add_host("b3", ipv4="198.18.1.13", segment=segment)
    for conf in ("all", "default", *(i.ifname for i in client.interfaces)):
        client.set_sysctl(f"net.ipv4.conf.{conf}.rp_filter", 0)
    for host in (b1, b2, b3):
        host.add_vip_on_loopback(VIP)
        host.start_http_backend(host.name, 80)
    for host in (b2, b3):
        host.add_route("198.18.0.0/24", via="198.18.1.2")
    client.add_route(f"{VIP}/32", via=lb.ipv4)

    path = tmp_path / "xdplb.yaml"
    path.write_text(f"""
interfaces:
  - {{name: {lb.ifname}, mode: generic}}
  - {{name: {second.ifname}, mode: generic}}
dataplane: {{flow_table_size: 4096}}
services:
  - name: web
    vip: {VIP}
    port: 80
    table_size: 1021
    checks: [{{type: tcp, timing: {{interval: 0.3, timeout: 0.25, rise: 1, fall: 2}}}}]
    backends:
      - {b1.ipv4}
      - {b2.ipv4}
      - {{address: {b3.ipv4}, interface: {second.ifname}}}
""")
    config.load_config(path)

    runner = DaemonThread(lb, path, start_grace=10.0, drain_seconds=0.2)
    runner.start()
    try:
        _wait(
            "every backend active",
            lambda: [(b.health, b.dataplane) for b in runner.snapshot().services[0].backends] == [("up", "active")] * 3,
        )
        before = runner.snapshot().totals
        answers = Counter(_get(client, VIP) for _ in range(REQUESTS))
        after = runner.snapshot().totals
        totals = {name: after[name] - before[name] for name in after}
    finally:
        runner.stop()

    assert set(answers) == {"b1", "b2", "b3"}, answers
    assert totals["redirected"] > 0 and totals["forwarded"] > totals["redirected"], totals
    assert totals["drop_no_egress"] == totals["drop_no_source_mac"] == 0, totals
    # Each request is at least 3 packets each way. The balancer forwards the client's and sees none of the
    # replies: what else it receives meanwhile is the health checks' answers (a few per backend per 0.3 s).
    assert totals["forwarded"] >= 3 * REQUESTS, totals
    assert totals["rx_packets"] - totals["forwarded"] < 2 * REQUESTS, totals
