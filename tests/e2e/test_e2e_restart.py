"""A single node restarts under load and no client notices: BIRD keeps the VIP through a restart stop (graceful
restart), the XDP program keeps forwarding with no daemon at all, and the next run swaps its program in once ready
and ends the restart with an End-of-RIB. A full stop still takes the route away at once."""

import signal
import time

import pytest

from balancer.lab import demo_lab
from balancer.lab.demo_lab import DemoLab
from tests.e2e import traffic
from tests.e2e.support import e2e_config, record, require_e2e, wait_for

pytestmark = pytest.mark.privileged

VIP = "192.0.2.100"


def test_a_restart_stop_and_start_lose_no_connection() -> None:
    require_e2e()
    with DemoLab(nodes=1, backends=2) as demo:
        data = e2e_config(demo, 0, backends=["b1", "b2"])
        data["bgp"]["graceful_restart"] = {"restart_time": 60}
        node = demo.start_node(0, data=data, drain_seconds=0.5)
        node.wait_ready()
        wait_for("BIRD has the VIP", lambda: demo.announced_by(VIP) == {demo_lab.NODE_IPS[0]}, 15)
        with traffic.Prober(demo.client, VIP, interval=0.02, max_seconds=90) as prober:
            time.sleep(0.5)
            node.process.send_signal(signal.SIGUSR2)
            assert node.process.wait(15) == 75, node.log()[-2000:]
            stopped_at = time.monotonic()
            assert demo.announced_by(VIP) == {demo_lab.NODE_IPS[0]}, "BIRD keeps the route of a restarting peer"
            time.sleep(1.0)  # no daemon at all
            node = demo.start_node(0, data=data, drain_seconds=0.5)
            node.wait_ready()
            ready_at = time.monotonic()
            wait_for("the End-of-RIB sent", lambda: "event=bgp_eor_sent" in node.log(), 15)
            time.sleep(1.0)
            kept = demo.announced_by(VIP)
        failed = [reply for reply in prober.replies if not reply.complete]
        assert kept == {demo_lab.NODE_IPS[0]}
        assert not failed, failed[:3]
        slowest = max(reply.seconds for reply in prober.replies)
        assert slowest < 0.8, f"a request waited {slowest:.2f} s: a dropped SYN"
        assert "event=xdp_taken_over" in node.log()
        record(
            "restart stop -> ready again",
            f"{ready_at - stopped_at:.1f} s, {len(prober.replies)} requests, 0 failed, slowest {slowest * 1000:.0f} ms",
        )
        node.process.send_signal(signal.SIGTERM)
        assert node.process.wait(15) == 0
        assert demo.announced_by(VIP) == set(), "a full stop withdraws"
