"""Two xdplb nodes behind one router (issue test 9): ECMP spreads clients over both, both pick the same backend for
a flow, and when one node stops mid-transfer its flows move to the other and keep going.

Both nodes run the same config (same hash seed, same backends in the same order). The flow table holds a flow only
on the node that saw it, so the survivor reaches the same backend by Maglev alone.
"""

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from balancer.lab import demo_lab
from balancer.lab.demo_lab import DemoLab, NodeProcess
from tests.e2e import traffic
from tests.e2e.support import backends_by_name, e2e_config, record, require_e2e, wait_for

pytestmark = pytest.mark.privileged

VIP = "192.0.2.100"
CLIENTS = 48
STREAM_SECONDS = 5.0


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[tuple[DemoLab, list[NodeProcess], list[str]]]:
    require_e2e()
    with DemoLab(nodes=2, backends=3) as demo:
        sources = demo.add_client_addresses(CLIENTS)
        nodes = [demo.start_node(i, data=e2e_config(demo, i), drain_seconds=1.0) for i in (0, 1)]
        for node in nodes:
            node.wait_ready()
        wait_for("both nodes announcing", lambda: demo.announced_by(VIP) == set(demo_lab.NODE_IPS), 10)
        wait_for("an ECMP route in the router's kernel", lambda: demo.kernel_route(VIP).count("nexthop") == 2, 5)
        yield demo, nodes, sources


def _carrier(demo: DemoLab, source: str) -> str:
    """The node the router's kernel sends ``source``'s packets for the VIP to (its ECMP hash choice)."""
    done = demo.router.run(
        ["ip", "-o", "route", "get", VIP, "from", source, "iif", demo.router.ifname], capture_output=True, text=True
    )
    words = str(done.stdout).split()
    return words[words.index("via") + 1]


def _new_flows(node: NodeProcess, *, taken_after: float = 0.0) -> int:
    """New flows in the node's status, from a snapshot taken after ``taken_after`` (the status is up to 1 s old)."""
    deadline = time.monotonic() + 5
    status = node.status()
    while status["time"] < taken_after and time.monotonic() < deadline:
        time.sleep(0.1)
        status = node.status()
    return int(status["services"][0]["new_flows"])


def test_two_nodes_share_clients_pick_the_same_backends_and_survive_a_node_loss(
    two_nodes: tuple[DemoLab, list[NodeProcess], list[str]],
) -> None:
    demo, nodes, sources = two_nodes
    carriers = {source: _carrier(demo, source) for source in sources}
    assert set(carriers.values()) == set(demo_lab.NODE_IPS), Counter(carriers.values())

    before = [_new_flows(node) for node in nodes]
    replies = traffic.fetch_many(demo.client, VIP, 4 * CLIENTS, sources=sources)
    assert all(r.complete for r in replies), [r for r in replies if not r.complete][:3]
    finished = time.time()
    carried = [_new_flows(node, taken_after=finished) - old for node, old in zip(nodes, before)]
    assert all(count > 0 for count in carried), carried
    # Whichever node carried it, every flow went to the backend the one reference table gives it.
    names = ["b1", "b2", "b3"]
    order = [(demo.backend(name).ipv4, 1) for name in names]
    wrong = [r for r in replies if names[traffic.predict(VIP, order, source=r.source, sport=r.sport)] != r.backend]
    assert not wrong, wrong[:3]
    assert set(Counter(r.backend for r in replies)) == set(names)

    # Long transfers from every client address, then node 1 stops (cleanly) in the middle of them.
    streams = [traffic.Stream(demo.client, VIP, STREAM_SECONDS, source=source) for source in sources]
    on_first = [s for s in streams if carriers[s.source] == demo_lab.NODE_IPS[0]]
    assert on_first and len(on_first) < len(streams)
    time.sleep(1.0)
    stopped = time.monotonic()
    os.kill(nodes[0].pid, signal.SIGTERM)
    wait_for("node 1's route gone", lambda: demo.announced_by(VIP) == {demo_lab.NODE_IPS[1]}, 5, interval=0.002)
    withdrawn = time.monotonic() - stopped
    wait_for("one path left in the router's kernel", lambda: "nexthop" not in demo.kernel_route(VIP), 2)
    assert _carrier(demo, on_first[0].source) == demo_lab.NODE_IPS[1]
    assert nodes[0].process.wait(15) == 0
    results = {id(s): s.finish(timeout=5) for s in streams}
    moved_ok = sum(results[id(s)][0] for s in on_first)
    all_ok = sum(ok for ok, _ in results.values())
    record(
        "node loss: connections that survived",
        f"{moved_ok} of {len(on_first)} moved from the stopped node ({moved_ok / len(on_first):.0%}); "
        f"{all_ok} of {len(streams)} in all",
    )
    record("node stop -> its route gone from BIRD", f"{withdrawn * 1000:.0f} ms")
    broken = {s.source: results[id(s)][1] for s in streams if not results[id(s)][0]}
    assert not broken, broken
    # The survivor answered the moved flows by Maglev alone, and new connections from every client still work.
    survivor = backends_by_name(demo, nodes[1].status())
    assert sum(b["new_flows"] for b in survivor.values()) > 0
    replies = traffic.fetch_many(demo.client, VIP, 2 * CLIENTS, sources=sources)
    assert all(r.complete for r in replies)
    assert not nodes[0].errors() and not nodes[1].errors(), nodes[0].errors() + nodes[1].errors()
