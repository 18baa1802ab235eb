"""`bpf.decap` on a real interface in a lab: attach, find again from the interface alone, detach; and tunnelled
datagrams from another host reach a socket bound to the VIP on the backend's loopback, through the decap only
(the kernel here has no tunnel modules)."""

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from ipaddress import ip_address

import pytest
from scapy.layers.inet import IP, UDP

import bpf
from balancer.lab import xdp
from balancer.lab.netns import Host, Lab
from bpf import decap
from tests.bpf.conftest import require_bpf

VIP = "192.0.2.100"


@pytest.fixture
def hosts() -> Iterator[tuple[Host, Host]]:
    require_bpf()
    with Lab() as lab:
        yield lab.add_host("client", ipv4="198.18.0.2"), lab.add_host("real", ipv4="198.18.0.20")


def test_attach_status_detach_from_the_interface_alone(hosts: tuple[Host, Host]) -> None:
    _, backend = hosts
    with backend.entered():
        attached = decap.attach(backend.ifname, mode="generic")
        assert (attached.mode, attached.addresses, attached.gue_port) == ("generic", (ip_address(backend.ipv4),), 6080)
        again = decap.status(backend.ifname)  # from the kernel: prog id, maps, counters
        # the interface's own traffic (an IPv6 router solicitation) may be counted by now, but nothing decapsulated
        counted = again.counters
        assert again.prog_id == attached.prog_id
        assert (counted.ipip, counted.gue, counted.malformed, counted.refused) == (0, 0, 0, 0)
        replaced = decap.attach(backend.ifname, mode="generic", gue_port=None)  # in place, settings anew
        assert (replaced.mode, replaced.gue_port) == ("generic", None) and replaced.prog_id != attached.prog_id
        decap.detach(backend.ifname)
        with pytest.raises(bpf.DataPlaneError, match="no XDP program"):
            decap.status(backend.ifname)


def test_another_programs_interface_is_refused(hosts: tuple[Host, Host]) -> None:
    _, backend = hosts
    with backend.entered(), backend.ipr() as ipr:
        xdp.attach_pass(ipr, backend.ifindex)
        with pytest.raises(bpf.DataPlaneError, match="another XDP program"):
            decap.attach(backend.ifname, mode="generic")
        with pytest.raises(bpf.DataPlaneError, match="not xdplb's decap"):
            decap.detach(backend.ifname)


@pytest.mark.parametrize("kind", ["ipip", "gue"])
def test_a_tunnelled_datagram_reaches_the_vip_on_the_backends_loopback(hosts: tuple[Host, Host], kind: str) -> None:
    client, backend = hosts
    backend.add_vip_on_loopback(VIP)
    inner = bytes(IP(src=str(client.ipv4), dst=VIP) / UDP(sport=40000, dport=9999) / b"through the tunnel")
    with backend.entered():
        decap.attach(backend.ifname, mode="generic")
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        server.bind((VIP, 9999))
        server.settimeout(3)
        with client.entered():
            if kind == "ipip":  # the kernel writes the outer header, protocol 4
                with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_IPIP) as raw:
                    raw.sendto(inner, (str(backend.ipv4), 0))
            else:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.sendto(inner, (str(backend.ipv4), bpf.DEFAULT_GUE_PORT))
        data, sender = server.recvfrom(2048)
        assert (data, sender) == (b"through the tunnel", (str(client.ipv4), 40000))
        with backend.entered():
            counters = decap.status(backend.ifname).counters
        assert (counters.ipip, counters.gue) == ((1, 0) if kind == "ipip" else (0, 1))
    finally:
        server.close()


def test_the_cli_attaches_shows_and_detaches(hosts: tuple[Host, Host]) -> None:
    """`xdplb decap` in the backend's namespace: each verb its own process, the program outliving the first."""
    _, backend = hosts

    def xdplb(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return backend.run(
            [sys.executable, "-m", "balancer.cli", "decap", *args],
            check=check,
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )

    attached = xdplb(
        "attach",
        backend.ifname,
        "--mode",
        "generic",
        "--address",
        "198.18.0.20",
        "--address",
        "2001:db8::20",
        "--gue-port",
        "7000",
        "--source",
        "198.18.0.5",
    )
    assert "decap attached (generic" in attached.stdout
    assert "tunnels to 198.18.0.20, 2001:db8::20 from 198.18.0.5; GUE port 7000" in attached.stdout
    assert (
        "ipip 0  gue 0  malformed 0  refused 0" in xdplb("status", backend.ifname).stdout
    )  # frames: whatever the veth saw
    assert "decap detached" in xdplb("detach", backend.ifname).stdout
    refused = xdplb("status", backend.ifname, check=False)
    assert (refused.returncode, refused.stderr.strip()) == (1, f"xdplb decap: {backend.ifname} has no XDP program")
