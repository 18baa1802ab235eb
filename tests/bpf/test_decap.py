"""The backend's decap program (bpf/decap.c) under BPF_PROG_TEST_RUN: what it takes off, byte for byte, and what
it leaves alone; and xdplb's own tunnelled frames through it, back to the client's packet."""

from collections.abc import Iterator
from dataclasses import fields
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

import bpf
from balancer.lab.netns import Host
from bpf import decap, testing
from tests.bpf import world
from tests.bpf.conftest import require_bpf
from tests.bpf.fixtures import tunnel as tunnel_cases
from tests.bpf.fixtures.case import PAYLOAD, Case
from tests.reference import tunnel

BACKEND_MAC, GATEWAY_MAC = "02:00:00:00:00:20", world.GATEWAY_MAC
HERE4, HERE6 = world.T4_IPIP.address, world.T6_IPIP.address  # the backend's tunnel addresses
OTHER4 = ip_address("198.18.5.99")
SOURCE4, SOURCE6 = world.TUNNEL_SOURCE4, world.TUNNEL_SOURCE6
INNER4 = IP(src=str(world.CLIENT4), dst=str(world.VIP4), tos=0x28) / TCP(sport=40301, dport=80, flags="A") / PAYLOAD
INNER6 = IPv6(src=str(world.CLIENT6), dst=str(world.VIP6)) / TCP(sport=40302, dport=80, flags="A") / PAYLOAD


@pytest.fixture(scope="module")
def loaded() -> Iterator[decap.LoadedDecap]:
    require_bpf()
    program = decap.load(
        gue_port=bpf.DEFAULT_GUE_PORT, addresses=[HERE4, HERE6, world.T4_GUE.address, world.T6_GUE.address]
    )
    try:
        yield program
    finally:
        program.cleanup()


def _tunnelled(
    inner: bytes, to: object, *, gue: bool, tag: int | None = None, source: IPv4Address | IPv6Address | None = None
) -> bytes:
    to = ip_address(str(to))
    source = source or (SOURCE4 if to.version == 4 else SOURCE6)
    outer = tunnel.outer_headers(inner, source, to, gue_port=bpf.DEFAULT_GUE_PORT if gue else None, flow_hash=7)
    ethertype = 0x0800 if to.version == 4 else 0x86DD
    l2 = (
        bytes(Ether(dst=BACKEND_MAC, src=GATEWAY_MAC, type=0x8100) / Dot1Q(vlan=tag, type=ethertype))[:18]
        if tag is not None
        else bytes(Ether(dst=BACKEND_MAC, src=GATEWAY_MAC, type=ethertype))
    )
    return l2 + outer + inner


def _plain(inner: bytes, tag: int | None = None) -> bytes:
    ethertype = 0x0800 if inner[0] >> 4 == 4 else 0x86DD
    if tag is not None:
        return bytes(Ether(dst=BACKEND_MAC, src=GATEWAY_MAC) / Dot1Q(vlan=tag, type=ethertype)) + inner
    return bytes(Ether(dst=BACKEND_MAC, src=GATEWAY_MAC, type=ethertype)) + inner


def _delta(loaded: decap.LoadedDecap, frame: bytes) -> tuple[testing.TestRun, dict[str, int]]:
    before = loaded.counters()
    run = testing.prog_test_run(loaded.prog_fd, frame)
    after = loaded.counters()
    return run, {
        f.name: getattr(after, f.name) - getattr(before, f.name) for f in fields(after) if f.name != "rx_packets"
    }


@pytest.mark.parametrize("gue", [False, True], ids=["ipip", "gue"])
@pytest.mark.parametrize(
    ("inner", "to"),
    [(INNER4, HERE4), (INNER6, HERE6), (INNER4, HERE6), (INNER6, HERE4)],
    ids=["4in4", "6in6", "4in6", "6in4"],
)
def test_a_tunnel_to_this_host_is_taken_off(loaded: decap.LoadedDecap, inner: IP, to: object, gue: bool) -> None:
    run, moved = _delta(loaded, _tunnelled(bytes(inner), to, gue=gue))
    assert (run.verdict, run.data) == ("XDP_PASS", _plain(bytes(inner)))
    assert moved == {"ipip": int(not gue), "gue": int(gue), "malformed": 0, "refused": 0}


def test_a_vlan_tag_stays_with_the_frame(loaded: decap.LoadedDecap) -> None:
    run, _ = _delta(loaded, _tunnelled(bytes(INNER6), HERE4, gue=True, tag=30))
    assert (run.verdict, run.data) == ("XDP_PASS", _plain(bytes(INNER6), tag=30))


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(_tunnelled(bytes(INNER4), OTHER4, gue=False), id="IPIP to another address"),
        pytest.param(
            bytes(
                Ether(dst=BACKEND_MAC)
                / IP(src=str(SOURCE4), dst=str(HERE4))
                / UDP(sport=50000, dport=53)
                / bytes(INNER4)
            ),
            id="UDP to another port",
        ),
        pytest.param(
            bytes(Ether(dst=BACKEND_MAC) / IP(src=str(SOURCE4), dst=str(HERE4)) / TCP(dport=22)),
            id="plain TCP to this host",
        ),
        pytest.param(
            bytes(Ether(dst=BACKEND_MAC) / IP(src=str(SOURCE4), dst=str(HERE4), proto=4, flags="MF") / bytes(INNER4)),
            id="an outer fragment",
        ),
        pytest.param(
            bytes(
                Ether(dst=BACKEND_MAC)
                / IP(src=str(SOURCE4), dst=str(HERE4), proto=4, options=[b"\x01"] * 4)
                / bytes(INNER4)
            ),
            id="outer IPv4 options",
        ),
        pytest.param(bytes(Ether(dst=BACKEND_MAC) / Raw(b"\x00" * 8)), id="a runt"),
    ],
)
def test_anything_else_passes_untouched(loaded: decap.LoadedDecap, frame: bytes) -> None:
    run, moved = _delta(loaded, frame)
    assert (run.verdict, run.data) == ("XDP_PASS", frame)
    assert moved == {"ipip": 0, "gue": 0, "malformed": 0, "refused": 0}


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(
            bytes(Ether(dst=BACKEND_MAC) / IP(src=str(SOURCE4), dst=str(HERE4), proto=4) / bytes(INNER6)),
            id="IPv6 behind protocol 4",
        ),
        pytest.param(
            bytes(
                Ether(dst=BACKEND_MAC)
                / IP(src=str(SOURCE4), dst=str(HERE4))
                / UDP(sport=50000, dport=6080)
                / Raw(b"\x10" * 40)
            ),
            id="GUE of no IP",
        ),
    ],
)
def test_a_tunnel_with_no_ip_of_its_kind_inside_is_dropped_and_counted(loaded: decap.LoadedDecap, frame: bytes) -> None:
    run, moved = _delta(loaded, frame)
    assert run.verdict == "XDP_DROP"
    assert moved == {"ipip": 0, "gue": 0, "malformed": 1, "refused": 0}


@pytest.mark.parametrize(
    "case", [c for c in tunnel_cases.CASES if c.verdict == "XDP_REDIRECT"], ids=lambda c: c.description
)
def test_xdplbs_own_frames_come_back_to_the_clients_packet(
    packet_plane: bpf.DataPlane, egress_netns: Host, loaded: decap.LoadedDecap, case: Case
) -> None:
    """The two programs in a row, as on the wire: the balancer's tunnelled frame, then the backend's decap, give
    the client's IP packet byte for byte."""
    for packet in case.before:
        testing.prog_test_run(packet_plane.prog_fd, bytes(packet), ingress_ifindex=world.INGRESS_IFINDEX)
    with egress_netns.entered():
        sent = testing.prog_test_run(packet_plane.prog_fd, bytes(case.packet), ingress_ifindex=world.INGRESS_IFINDEX)
    assert sent.verdict == "XDP_REDIRECT"
    received = testing.prog_test_run(loaded.prog_fd, sent.data)
    frame = bytes(case.packet)
    inner = frame[18:] if Dot1Q in case.packet else frame[14:]
    assert received.verdict == "XDP_PASS"
    assert (
        received.data
        == bytes(Ether(dst=GATEWAY_MAC, src=world.EGRESS_MAC, type=0x0800 if inner[0] >> 4 == 4 else 0x86DD)) + inner
    )


def test_with_sources_given_a_tunnel_from_another_is_dropped_and_counted() -> None:
    """Any host that reaches the backend could tunnel it a packet with any inner source: with the balancers'
    sources given, only theirs are taken off; other traffic to the host still passes."""
    require_bpf()
    program = decap.load(addresses=[HERE4, HERE6], sources=[SOURCE4])
    try:
        stranger = _tunnelled(bytes(INNER4), HERE4, gue=False, source=OTHER4)
        run, moved = _delta(program, stranger)
        assert (run.verdict, moved) == ("XDP_DROP", {"ipip": 0, "gue": 0, "malformed": 0, "refused": 1})
        run, moved = _delta(program, _tunnelled(bytes(INNER4), HERE4, gue=True))
        assert (run.verdict, run.data, moved["gue"]) == ("XDP_PASS", _plain(bytes(INNER4)), 1)
        run, moved = _delta(program, _tunnelled(bytes(INNER6), HERE6, gue=False))  # no IPv6 source given: any
        assert (run.verdict, moved["ipip"]) == ("XDP_PASS", 1)
        plain = bytes(Ether(dst=BACKEND_MAC) / IP(src=str(OTHER4), dst=str(HERE4)) / TCP(dport=22))
        assert _delta(program, plain)[0].verdict == "XDP_PASS"
    finally:
        program.cleanup()
