"""Send frames through the loaded program and read where they went."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import ip_address

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet

import bpf
from bpf import testing
from tests.bpf import world


def tcp(sport: int, dport: int, *, flags: str = "A", src: object = world.CLIENT4, dst: object = world.VIP4) -> Packet:
    ip = IP if ip_address(str(dst)).version == 4 else IPv6
    return (
        Ether(dst=world.LB_MAC, src=world.CLIENT_MAC)
        / ip(src=str(src), dst=str(dst))
        / TCP(sport=sport, dport=dport, flags=flags)
    )


def udp(sport: int, dport: int, *, src: object = world.CLIENT4, dst: object = world.VIP4) -> Packet:
    ip = IP if ip_address(str(dst)).version == 4 else IPv6
    return (
        Ether(dst=world.LB_MAC, src=world.CLIENT_MAC) / ip(src=str(src), dst=str(dst)) / UDP(sport=sport, dport=dport)
    )


def send(plane: bpf.DataPlane, packet: Packet) -> tuple[str, str | None]:
    """(verdict, name of the real the frame went to, or None)."""
    run = testing.prog_test_run(plane.prog_fd, bytes(packet), ingress_ifindex=world.INGRESS_IFINDEX)
    if run.verdict != "XDP_TX":
        return run.verdict, None
    dst = Ether(run.data).dst
    return run.verdict, next(r.name for r in world.REALS.values() if r.mac == dst)


@contextmanager
def one_cpu() -> Iterator[None]:
    """Pin this thread to one CPU: the flood guard counts and the next-hop cache is kept per CPU."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
