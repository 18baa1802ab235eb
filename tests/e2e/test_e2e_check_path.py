"""Checks through the data path, end to end: BIRD learns the VIP from the node, the client's flows reach an on-link
backend (MAC rewrite) and two routed ones behind the router (GUE and IPIP, taken off by ``xdplb decap``), and all
are checked as the VIP.

Take the VIP off a backend's loopback and its own address still answers, but the check through the data path
fails, the backend goes down with a reason that says why, and the client's new flows leave it; put the VIP back and
it comes back up.
"""

import urllib.request
from collections import Counter
from collections.abc import Iterator

import pytest

from balancer.lab import demo_lab
from balancer.lab.demo_lab import DemoLab, NodeProcess
from tests.e2e import traffic
from tests.e2e.support import DOWN_WITHIN, UP_WITHIN, backends_by_name, e2e_config, require_e2e, wait_for

pytestmark = pytest.mark.privileged

VIP = "192.0.2.100"


@pytest.fixture(scope="module")
def node() -> Iterator[tuple[DemoLab, NodeProcess]]:
    require_e2e()
    with DemoLab(nodes=1, backends=1, routed=2) as demo:
        data = e2e_config(demo, 0, backends=["b1"])
        data["services"][0]["backends"] += [
            {"address": demo.backend("r1").ipv4, "forwarding": "gue"},
            {"address": demo.backend("r2").ipv4, "forwarding": "ipip"},
        ]
        data["policies"]["web"]["checks"][0]["via"] = "dataplane"
        node = demo.start_node(0, data=data, drain_seconds=0.2)
        node.wait_ready()
        wait_for("BIRD has the VIP from the node", lambda: demo.announced_by(VIP) == {demo_lab.NODE_IPS[0]}, 15)
        yield demo, node


def _health(demo: DemoLab, node: NodeProcess) -> dict[str, tuple[str, str]]:
    return {name: (b["health"], b["reason"]) for name, b in backends_by_name(demo, node.status()).items()}


def _answers(demo: DemoLab, count: int = 40) -> Counter[str]:
    return Counter(reply.backend or "failed" for reply in traffic.fetch_many(demo.client, VIP, count))


EVERY = {"b1", "r1", "r2"}


@pytest.mark.parametrize("name", ["r1", "r2", "b1"])
def test_a_backend_without_the_vip_goes_down_though_its_address_answers(
    node: tuple[DemoLab, NodeProcess], name: str
) -> None:
    demo, lb = node
    wait_for("every backend up", lambda: {h for h, _ in _health(demo, lb).values()} == {"up"}, UP_WITHIN + 5)
    assert set(_answers(demo)) == EVERY
    host = demo.backend(name)

    host.remove_vip_from_loopback(VIP)
    try:
        health = wait_for(f"{name} down", lambda: (h := _health(demo, lb))[name][0] == "down" and h, DOWN_WITHIN + 5)
        assert (
            health[name][1] == f"http :80/ via dataplane: no answer on VIP {VIP}:80 through the data path (is "
            "the VIP on the backend's loopback?)"
        ), health
        with demo.nodes[0].entered():  # its own address still answers: a direct check would have passed
            with urllib.request.urlopen(f"http://{host.ipv4}/healthz", timeout=3) as response:
                assert response.status == 200
        assert set(_answers(demo)) == EVERY - {name}, "new flows leave it"
        assert demo.announced_by(VIP) == {demo_lab.NODE_IPS[0]}, "the other backends keep the VIP up"
    finally:
        host.add_vip_on_loopback(VIP)
    wait_for(f"{name} up again", lambda: _health(demo, lb)[name][0] == "up", UP_WITHIN + 5)
    assert set(_answers(demo)) == EVERY
