"""What the data plane should do with a packet, from the references alone."""

import ipaddress
from functools import cache

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.packet import Packet

import bpf
import config
from tests.bpf import world
from tests.reference import flowhash, maglev, tunnel


@cache
def reference_table(spec: bpf.Service) -> tuple[int, ...]:
    return tuple(maglev.build([(str(b.address), b.weight) for b in spec.backends], spec.table_size))


def verdict_for(real: world.Real) -> str:
    """XDP_TX for a backend on the ingress interface, XDP_REDIRECT for one on the second segment (where the
    tunnels' gateway is too)."""
    return "XDP_REDIRECT" if real.ifindex == world.EGRESS_IFINDEX or real.tunnel else "XDP_TX"


def chosen_real(spec: bpf.Service, packet: Packet) -> world.Real:
    """The real server the reference Maglev table gives this packet's flow."""
    ip = packet[IP] if IP in packet else packet[IPv6]
    l4 = packet[TCP] if TCP in packet else packet[UDP]
    proto = 6 if TCP in packet else 17
    h = flowhash.flow_hash(
        ipaddress.ip_address(ip.src), ipaddress.ip_address(ip.dst), l4.sport, l4.dport, proto, sticky=spec.sticky
    )
    table = reference_table(spec)
    backend = spec.backends[table[h % len(table)]]
    return next(r for r in world.REALS.values() if r.address == backend.address)


def flow_key_bytes(saddr: config.IpAddress, daddr: config.IpAddress, sport: int, dport: int, proto: int) -> bytes:
    """The C flow key's bytes for a flow."""
    return flowhash.flow_key(saddr, daddr, sport, dport, proto)


def forwarded(packet: Packet, real: world.Real, *, flow: Packet | None = None, flow_seed: int = 0) -> bytes:
    """The frame the program should send: backend's MAC, the balancer's MAC on the backend's interface, the
    backend's VLAN where it has one. A tunnelled backend: the inner IP packet behind the outer headers
    (``tests/reference/tunnel.py``, the hash of ``flow or packet`` with the plane's ``flow_seed``), sent to the
    gateway out of the second segment."""
    if real.tunnel is not None:
        return _tunnelled(packet, real, flow or packet, flow_seed)
    src = world.EGRESS_MAC if real.ifindex == world.EGRESS_IFINDEX else world.LB_MAC
    out = packet.copy()
    out[Ether].dst = real.mac
    out[Ether].src = src
    if real.vlan:
        tag = out.getlayer(Dot1Q) or out.getlayer(Dot1AD)
        if tag is not None:  # an 802.1ad S-tag leaves as the backend's 802.1Q tag
            tag.vlan = real.vlan
            out[Ether].type = 0x8100
        else:
            payload = out[Ether].payload
            out = Ether(dst=real.mac, src=src) / Dot1Q(vlan=real.vlan, type=out[Ether].type) / payload
    return bytes(out)


def _tunnelled(packet: Packet, real: world.Real, flow: Packet, flow_seed: int) -> bytes:
    frame = bytes(packet)
    rest = frame[18:] if Dot1Q in packet or Dot1AD in packet else frame[14:]
    ip_len = int.from_bytes(rest[2:4], "big") if rest[0] >> 4 == 4 else 40 + int.from_bytes(rest[4:6], "big")
    inner, padding = rest[:ip_len], rest[ip_len:]  # Ethernet padding stays at the end, outside the tunnel
    ip = flow[IP] if IP in flow else flow[IPv6]
    l4 = flow[TCP] if TCP in flow else flow[UDP]
    key = flowhash.flow_key(
        ipaddress.ip_address(ip.src), ipaddress.ip_address(ip.dst), l4.sport, l4.dport, 6 if TCP in flow else 17
    )
    source = world.TUNNEL_SOURCE4 if real.address.version == 4 else world.TUNNEL_SOURCE6
    outer = tunnel.outer_headers(
        inner,
        source,
        real.address,
        flow_hash=flowhash.murmur3_32(key, flow_seed),
        gue_port=bpf.DEFAULT_GUE_PORT if real.tunnel == "gue" else None,
    )
    ethertype = 0x0800 if real.address.version == 4 else 0x86DD
    return bytes(Ether(dst=world.GATEWAY_MAC, src=world.EGRESS_MAC, type=ethertype)) + outer + inner + padding
