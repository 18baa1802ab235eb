"""The ExaBGP config, environment and commands the speaker generates (no processes)."""

import ipaddress

import pytest

import bgp
import config
from bgp import _exabgp_config


def _config(**peer: object) -> config.BgpConfig:
    base: dict[str, object] = {"address": "192.0.2.254", "peer_as": 4200000000}
    return config.BgpConfig.model_validate(
        {"local_as": 4200000001, "router_id": "192.0.2.1", "peers": [{**base, **peer}]}
    )


def test_neighbor_block_carries_every_peer_setting() -> None:
    text = _exabgp_config.render(
        _config(local_address="192.0.2.1", port=1179, hold_time=9, password="s3cret word", local_as=65010),
        bridge=["/usr/bin/python3", "/x/_bridge.py", "/tmp/d/api.sock"],
    )
    assert "run /usr/bin/python3 /x/_bridge.py /tmp/d/api.sock;" in text
    assert "neighbor 192.0.2.254 {" in text
    for line in (
        "router-id 192.0.2.1;",
        "local-as 65010;",
        "peer-as 4200000000;",
        "connect 1179;",
        "hold-time 9;",
        "local-address 192.0.2.1;",
        'md5-password "s3cret word";',
        "family { ipv4 unicast; }",
        "api { processes [ xdplb ]; neighbor-changes; send { parsed; update; } }",
    ):
        assert f"    {line}" in text
    assert "announce" not in text and " route " not in text, "no static route: nothing before the core asks"


def test_graceful_restart_asks_for_the_capability_and_our_own_end_of_rib() -> None:
    plain = _exabgp_config.render(_config(), bridge=["bridge"])
    assert "graceful-restart" not in plain and "manual-eor" not in plain, "ExaBGP's defaults: no GR, its own EOR"
    graceful = _config().model_copy(update={"graceful_restart": config.GracefulRestart(restart_time=90)})
    text = _exabgp_config.render(graceful, bridge=["bridge"])
    assert "    capability { graceful-restart 90; }" in text and "    manual-eor true;" in text


def test_ipv6_peer_gets_ipv6_family_and_default_local_as() -> None:
    text = _exabgp_config.render(_config(address="2001:db8::1"), bridge=["b"])
    assert "family { ipv6 unicast; }" in text
    assert "local-as 4200000001;" in text
    assert "local-address" not in text


@pytest.mark.parametrize(
    ("peer", "match"),
    [
        ({"password": 'a"b'}, "MD5 password"),
        ({"local_address": "2001:db8::2"}, "another family"),
        ({"passive": True}, "passive"),
        ({"password": "x" * 81}, "at most 80 bytes"),
        ({"password": "\u00e9" * 41}, "at most 80 bytes"),  # 82 bytes in UTF-8
    ],
)
def test_unusable_peer_is_refused(peer: dict[str, object], match: str) -> None:
    with pytest.raises(bgp.BgpError, match=match):
        bgp.Speaker(_config(**peer))


def test_environment_keeps_pdeathsig_working_and_acks_on() -> None:
    env = _exabgp_config.environment({"PATH": "/bin", "exabgp_api_ack": "false", "exabgp.daemon.user": "nobody"})
    assert env["PATH"] == "/bin"
    assert env["exabgp_api_ack"] == "true"
    assert env["exabgp_daemon_drop"] == "false"
    assert env["exabgp_api_encoder"] == "json"
    assert "exabgp.daemon.user" not in env, "the caller's ExaBGP settings do not leak in"
    assert env["exabgp_daemon_user"] not in ("", "nobody")


def test_announce_command_has_every_attribute_and_names_the_peers() -> None:
    attrs = config.RouteAttributes(
        med=10, local_preference=300, communities=("65000:1", "65000:2"), large_communities=("65000:1:2",)
    )
    peers = [ipaddress.ip_address("192.0.2.254"), ipaddress.ip_address("192.0.2.253")]
    prefixes = [ipaddress.ip_network("192.0.2.10/32"), ipaddress.ip_network("192.0.2.11/32")]
    assert _exabgp_config.announce_command(peers, prefixes, attrs) == (
        "neighbor 192.0.2.254 , neighbor 192.0.2.253 announce attributes next-hop self med 10 local-preference 300"
        " community [ 65000:1 65000:2 ] large-community [ 65000:1:2 ] nlri 192.0.2.10/32 192.0.2.11/32"
    )
    bare = config.RouteAttributes(next_hop=ipaddress.ip_address("2001:db8::1"))
    v6 = [ipaddress.ip_address("2001:db8::fe")]
    assert (
        _exabgp_config.announce_command(v6, [ipaddress.ip_network("2001:db8::10/128")], bare)
        == "neighbor 2001:db8::fe announce attributes next-hop 2001:db8::1 nlri 2001:db8::10/128"
    )
    assert (
        _exabgp_config.withdraw_command(peers[:1], prefixes)
        == "neighbor 192.0.2.254 withdraw attributes nlri 192.0.2.10/32 192.0.2.11/32"
    )


@pytest.mark.parametrize("next_hop", ["2001:db8::1", "0.0.0.0", "224.0.0.1"])
def test_bad_next_hop_is_refused(next_hop: str) -> None:
    # model_construct: the config refuses an unspecified or multicast next hop already; the driver checks again.
    attrs = config.RouteAttributes.model_construct(next_hop=ipaddress.ip_address(next_hop))
    with pytest.raises(bgp.AttributeMismatchError):
        bgp.verify_route(ipaddress.ip_network("192.0.2.10/32"), attrs)


def test_duplicate_peer_addresses_are_refused() -> None:
    peer = {"address": "192.0.2.254", "peer_as": 65001}
    cfg = config.BgpConfig.model_validate({"local_as": 65001, "router_id": "192.0.2.1", "peers": [peer, peer]})
    with pytest.raises(bgp.BgpError, match=r"peer 192.0.2.254 is already peers\[0\]"):
        bgp.Speaker(cfg)


def test_verify_config_lists_every_refusal_at_its_path_without_the_password() -> None:
    cfg = config.BgpConfig.model_validate(
        {
            "local_as": 65001,
            "router_id": "192.0.2.1",
            "peers": [
                {"address": "192.0.2.254", "peer_as": 65001, "passive": True},
                {"address": "192.0.2.253", "peer_as": 65001, "password": 'se"cret'},
                {"address": "192.0.2.252", "peer_as": 65001, "password": "fine"},
            ],
        }
    )
    assert bgp.verify_config(cfg) == [
        (("peers", 0, "passive"), "peer 192.0.2.254: passive sessions are not supported by the ExaBGP driver"),
        (
            ("peers", 1, "password"),
            "peer 192.0.2.253: the MD5 password must be non-empty, without quotes, backslashes or line breaks",
        ),
    ]
    assert bgp.verify_config(cfg.model_copy(update={"peers": cfg.peers[2:]})) == []
