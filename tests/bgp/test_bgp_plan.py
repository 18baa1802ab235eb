"""The writer's plan: the difference between wanted and held routes as batched ExaBGP commands (pure, no processes)."""

import ipaddress

import config
from bgp import _routes

V4_PEER = ipaddress.ip_address("192.0.2.254")
V6_PEER = ipaddress.ip_address("2001:db8::fe")
PEERS = {4: (V4_PEER,), 6: (V6_PEER,)}
A = config.RouteAttributes(med=10)
B = config.RouteAttributes(med=20, communities=("65000:1",))


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


def v4(count: int, start: int = 0) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.IPv4Network((0xC6120000 + start + i, 32)) for i in range(count)]


def test_nothing_to_do_when_held_is_wanted() -> None:
    routes = dict.fromkeys(v4(3), A)
    assert _routes.plan(routes, dict(routes), peers=PEERS) == []


def test_routes_sharing_attributes_and_family_go_in_one_command_withdrawals_first() -> None:
    p1, p2, p3, p4 = v4(4)
    six = net("2001:db8::10/128")
    plan = _routes.plan({p2: A, p1: A, p3: B, six: A}, {p4: A, p3: A}, peers=PEERS)
    assert [batch.command for batch in plan] == [
        "neighbor 192.0.2.254 withdraw attributes nlri 198.18.0.3/32",
        "neighbor 192.0.2.254 announce attributes next-hop self med 10 nlri 198.18.0.0/32 198.18.0.1/32",
        "neighbor 192.0.2.254 announce attributes next-hop self med 20 community [ 65000:1 ] nlri 198.18.0.2/32",
        "neighbor 2001:db8::fe announce attributes next-hop self med 10 nlri 2001:db8::10/128",
    ]
    assert plan[1].changes == ((p1, A), (p2, A))
    assert plan[0].changes == ((p4, None),)


def test_withdrawing_everything_is_one_command() -> None:
    held = {**dict.fromkeys(v4(250), A), net("2001:db8::10/128"): B}
    (batch,) = _routes.plan({}, held, peers=PEERS)
    assert batch.command == "clear adj-rib out"
    assert {prefix for prefix, _ in batch.changes} == set(held)
    assert all(attributes is None for _, attributes in batch.changes)


def test_commands_hold_at_most_max_prefixes_and_a_plan_at_most_max_bytes() -> None:
    wanted = dict.fromkeys(v4(250), A)
    plan = _routes.plan(wanted, {}, peers=PEERS)
    assert [len(batch.changes) for batch in plan] == [100, 100, 50]
    cut = _routes.plan(wanted, {}, peers=PEERS, max_prefixes=10, max_bytes=1000)
    assert 1 <= len(cut) < 25
    assert sum(len(batch.command or "") + 1 for batch in cut) <= 1000
    huge = _routes.plan(wanted, {}, peers=PEERS, max_bytes=10)
    assert len(huge) == 1, "the first command goes even if it alone is over the limit"


def test_a_family_without_peers_has_nothing_to_send() -> None:
    six = net("2001:db8::10/128")
    (batch,) = _routes.plan({six: A}, {}, peers={4: (V4_PEER,)})
    assert batch.command is None
    assert batch.changes == ((six, A),)


def test_every_peer_of_the_family_is_named() -> None:
    other = ipaddress.ip_address("192.0.2.253")
    (batch,) = _routes.plan(dict.fromkeys(v4(1), A), {}, peers={4: (V4_PEER, other)})
    assert batch.command is not None
    assert batch.command.startswith("neighbor 192.0.2.254 , neighbor 192.0.2.253 announce attributes ")


def test_rejected_changes_are_skipped_until_they_change() -> None:
    p1, p2 = v4(2)
    assert _routes.plan({p1: A, p2: A}, {}, peers=PEERS, skip={p1: A})[0].changes == ((p2, A),)
    assert _routes.plan({p1: B}, {}, peers=PEERS, skip={p1: A})[0].changes == ((p1, B),)


def test_suspects_of_a_rejected_command_go_one_per_command() -> None:
    p1, p2, p3 = v4(3)
    plan = _routes.plan({p1: A, p2: A, p3: A}, {}, peers=PEERS, alone={p1, p2})
    assert sorted(batch.changes for batch in plan) == [((p1, A),), ((p2, A),), ((p3, A),)]
    # not `clear adj-rib out` either: that would not tell which withdrawal ExaBGP refuses
    assert len(_routes.plan({}, {p1: A, p2: A}, peers=PEERS, alone={p1})) == 2
