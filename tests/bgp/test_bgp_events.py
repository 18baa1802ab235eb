"""ExaBGP JSON messages into peer state (messages copied from ExaBGP 5.0.15's output)."""

import ipaddress
import json

from bgp import _events, _peers

PEER = ipaddress.ip_address("127.0.0.1")
_NEIGHBOR = '"address": { "local": "127.0.0.2", "peer": "127.0.0.1" }, "asn": { "local": 65001, "peer": 65001 }'


def _state(state: str, extra: str = "") -> dict[str, object]:
    return json.loads(  # type: ignore[no-any-return]
        '{ "exabgp": "5.0.0", "time": 1795767038.5128484, "type": "state", "neighbor": { '
        + _NEIGHBOR
        + f', "router-id": "192.0.2.1" , "state": "{state}"{extra} }} }}'
    )


def _update(body: str) -> dict[str, object]:
    return json.loads(  # type: ignore[no-any-return]
        '{ "exabgp": "5.0.0", "time": 1.0, "type": "update", "neighbor": { '
        + _NEIGHBOR
        + f', "direction": "send", "message": {{ "update": {body} }} }} }}'
    )


ANNOUNCE = _update(
    '{ "attribute": { "origin": "igp", "med": 100 }, "announce": { "ipv4 unicast": { "127.0.0.2": '
    '[ { "nlri": "192.0.2.10/32" }, { "nlri": "192.0.2.11/32" } ] } } }'
)
WITHDRAW = _update('{ "withdraw": { "ipv4 unicast": [ { "nlri": "192.0.2.10/32" } ] } }')


def test_state_and_updates_parse() -> None:
    up = _events.parse(_state("up"))
    assert up == _events.StateChange(PEER, "up", 1795767038.5128484, None)
    down = _events.parse(_state("down", ', "reason": "stop, message [shutting down]"'))
    assert isinstance(down, _events.StateChange) and down.reason == "stop, message [shutting down]"
    sent = _events.parse(ANNOUNCE)
    assert sent == _events.SentUpdate(
        PEER, frozenset(map(ipaddress.ip_network, ["192.0.2.10/32", "192.0.2.11/32"])), frozenset()
    )
    eor = _update('{ "eor": { "afi" : "ipv4", "safi" : "unicast" } }')
    assert _events.parse(eor) == _events.SentUpdate(PEER, frozenset(), frozenset())
    assert _events.parse({"type": "notification", "notification": "shutdown"}) is None


def test_peer_table_counts_routes_in_the_session() -> None:
    changes: list[_peers.PeerState] = []
    table = _peers.PeerTable([PEER], changes.append)
    assert table.snapshot()[PEER].state is _peers.PeerStatus.DOWN
    for message in (_state("connected"), _state("up"), ANNOUNCE, WITHDRAW):
        event = _events.parse(message)
        assert event is not None
        table.apply(event)
    state = table.snapshot()[PEER]
    assert state.state is _peers.PeerStatus.ESTABLISHED
    assert state.routes_sent == 1
    assert abs(state.since.timestamp() - 1795767038.5128484) < 1e-5
    assert [c.state for c in changes] == [_peers.PeerStatus.CONNECTED, _peers.PeerStatus.ESTABLISHED]
    table.apply(_events.parse(_state("down")))  # type: ignore[arg-type]
    assert table.snapshot()[PEER].routes_sent == 0, "a closed session carries nothing"
    table.all_down("exabgp exited")
    assert changes[-1].state is _peers.PeerStatus.DOWN


def _at(state: str, time: float, reason: str | None = None) -> _events.StateChange:
    return _events.StateChange(PEER, state, time, reason)


def test_retries_while_down_keep_since_and_the_reason_the_session_ended() -> None:
    """ExaBGP reports each failed retry as connected, then down: only leaving or entering Established counts."""
    changes: list[_peers.PeerState] = []
    table = _peers.PeerTable([PEER], changes.append)
    table.apply(_at("connected", 100.0))
    table.apply(_at("up", 101.0))
    table.apply(_at("down", 200.0, "notification received (6,3)"))
    for retry in range(5):
        table.apply(_at("connected", 201.0 + retry))
        table.apply(_at("down", 201.5 + retry, "connection to 127.0.0.1:179 failed"))
    state = table.snapshot()[PEER]
    assert (state.state, state.since.timestamp(), state.reason) == (
        _peers.PeerStatus.DOWN, 200.0, "notification received (6,3)")  # fmt: skip
    assert {c.since.timestamp() for c in changes[3:]} == {200.0}, "no retry moved since"
    table.apply(_at("connected", 300.0))
    assert table.snapshot()[PEER].since.timestamp() == 200.0
    table.apply(_at("up", 300.5))
    state = table.snapshot()[PEER]
    assert (state.state, state.since.timestamp(), state.reason) == (_peers.PeerStatus.ESTABLISHED, 300.5, None)


def test_exabgp_exit_moves_since_only_for_established_sessions() -> None:
    table = _peers.PeerTable([PEER], lambda state: None)
    table.apply(_at("up", 100.0))
    table.apply(_at("down", 150.0, "notification received (6,2)"))
    table.apply(_at("connected", 160.0))
    table.all_down("exabgp exited")
    state = table.snapshot()[PEER]
    assert (state.state, state.since.timestamp(), state.reason) == (
        _peers.PeerStatus.DOWN, 150.0, "notification received (6,2)")  # fmt: skip


def test_peer_table_follows_the_configured_addresses() -> None:
    other = ipaddress.ip_address("::1")
    changes: list[_peers.PeerState] = []
    table = _peers.PeerTable([PEER], changes.append)
    table.apply(_at("up", 100.0))
    table.set_addresses([other])
    assert list(table.snapshot()) == [other]
    assert table.snapshot()[other].state is _peers.PeerStatus.DOWN
    assert (changes[-1].address, changes[-1].state, changes[-1].reason) == (
        PEER, _peers.PeerStatus.DOWN, "removed from the configuration")  # fmt: skip
    table.apply(_at("up", 101.0))  # a late event of the removed peer
    assert PEER not in table.snapshot()
