"""What a new bgp section changes, peer by peer, as ExaBGP's reload will see it (pure, no ExaBGP)."""

import ipaddress

import config
from bgp import _exabgp_config, _reconfig

A, B, C = (ipaddress.ip_address(f"198.18.0.{n}") for n in (1, 2, 3))


def _peer(address: ipaddress.IPv4Address | ipaddress.IPv6Address, **fields: object) -> dict[str, object]:
    return {"address": str(address), "peer_as": 65000, **fields}


def _config(*peers: dict[str, object], **fields: object) -> config.BgpConfig:
    return config.BgpConfig.model_validate({"local_as": 65001, "router_id": "192.0.2.1", "peers": peers, **fields})


def test_added_removed_and_changed_peers_are_named_with_fields_not_values() -> None:
    old = _config(_peer(A), _peer(B, password="old-secret"), _peer(C))
    new = _config(_peer(A), _peer(B, password="new-secret", hold_time=9), _peer(ipaddress.ip_address("2001:db8::1")))
    changes = _reconfig.diff(old, new)
    assert changes.describe() == [
        "peer 2001:db8::1 added",
        "peer 198.18.0.3 removed",
        "peer 198.18.0.2 changed: hold_time, password",
    ]
    assert changes.recreated == (), "ExaBGP keeps these neighbours (and their RIBs): a session restart"


def test_attributes_alone_change_nothing_for_the_speaker() -> None:
    old = _config(_peer(A), attributes={"med": 10})
    new = _config(_peer(A), attributes={"med": 20, "communities": ["65000:1"]})
    changes = _reconfig.diff(old, new)
    assert not changes and changes.describe() == []


def test_router_id_and_local_as_change_every_peer_that_uses_them() -> None:
    old = _config(_peer(A), _peer(B, local_as=65010))
    assert _reconfig.diff(old, _config(_peer(A), _peer(B, local_as=65010), router_id="192.0.2.2")).describe() == [
        "peer 198.18.0.1 changed: router_id", "peer 198.18.0.2 changed: router_id"]  # fmt: skip
    changes = _reconfig.diff(old, _config(_peer(A), _peer(B, local_as=65010), local_as=65002))
    assert changes.describe() == ["peer 198.18.0.1 changed: local_as"], "B has its own local_as"
    assert changes.recreated == (A,), "a new name for ExaBGP: a new neighbour, with an empty RIB"


def test_a_closing_peer_is_rendered_passive_and_the_others_as_they_were() -> None:
    bgp_config = _config(_peer(A), _peer(B))
    text = _exabgp_config.render(bgp_config, bridge=["b"], closing=[B])
    first, second = text.split("neighbor 198.18.0.2")
    assert "passive" not in first
    assert "passive true;" in second
    assert text.replace("    passive true;\n", "") == _exabgp_config.render(bgp_config, bridge=["b"])
