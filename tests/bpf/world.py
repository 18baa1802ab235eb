"""The world every data-plane test assumes: the balancer's interfaces, a client, backends and services.

Tests run the program with BPF_PROG_TEST_RUN, where the ingress interface is loopback (ifindex 1); the
balancer's MAC is set for it. A second interface, ``EGRESS_IFINDEX`` (a veth of the packet tests' own network
namespace, ``conftest.egress_netns``), holds the backends of a second segment: frames for them are redirected.
"""

from dataclasses import dataclass
from ipaddress import ip_address

import bpf
import config

SETTINGS = bpf.DataPlaneSettings(flow_table_size=256, max_services=64, max_backends=256, new_flow_rate_limit=100000)
INGRESS_IFINDEX = 1
LB_MAC = "02:00:00:00:00:01"
EGRESS_IFINDEX = 10  # made with this index in the packet tests' namespace
EGRESS_MAC = "02:00:00:00:00:10"  # the balancer's MAC on the second segment
CLIENT_MAC = "02:00:00:00:00:02"
CLIENT4 = ip_address("198.18.0.2")
CLIENT6 = ip_address("2001:db8::2")
VIP4 = ip_address("192.0.2.100")
VIP6 = ip_address("2001:db8:100::100")
NOT_A_VIP4 = ip_address("192.0.2.200")
ROUTER4 = ip_address("198.18.0.1")  # sends ICMP errors about backends' replies
ROUTER6 = ip_address("2001:db8::1")
TABLE_SIZE = 251
# Routed backends (tunnels): behind a gateway on the second segment, in the packet tests' namespace.
TUNNEL_SOURCE4 = ip_address("198.18.0.1")
TUNNEL_SOURCE6 = ip_address("2001:db8::1")
SEGMENT2_ADDRESSES = ("198.18.1.1/24", "2001:db8:1::1/64")  # the balancer's on the second segment
GATEWAY4, GATEWAY6 = ip_address("198.18.1.254"), ip_address("2001:db8:1::fe")
GATEWAY_MAC = "02:00:00:00:00:fe"
ROUTED_PREFIXES = (("198.18.5.0/24", GATEWAY4), ("2001:db8:5::/64", GATEWAY6))


@dataclass(frozen=True)
class Real:
    name: str
    address: config.IpAddress
    mac: str
    vlan: int = 0
    ifindex: int = 0  # 0: the ingress interface
    tunnel: bpf.Tunnel | None = None  # routed: no MAC of its own, the gateway's

    def backend(self, weight: int = 1) -> bpf.Backend:
        if self.tunnel is not None:
            return bpf.Backend(self.address, weight=weight, tunnel=self.tunnel)
        return bpf.Backend(self.address, weight=weight, vlan=self.vlan, mac=self.mac, ifindex=self.ifindex)


B1 = Real("b1", ip_address("198.18.0.11"), "02:00:00:00:00:0b")
B2 = Real("b2", ip_address("198.18.0.12"), "02:00:00:00:00:0c")
B3_VLAN = Real("b3", ip_address("198.18.0.13"), "02:00:00:00:00:0d", vlan=100)
B1_6 = Real("b1v6", ip_address("2001:db8::11"), "02:00:00:00:00:1b")
B2_6 = Real("b2v6", ip_address("2001:db8::12"), "02:00:00:00:00:1c")
# On the second segment (EGRESS_IFINDEX): redirected. B1_HERE is b1's address learnt on the ingress interface.
B4_SEG2 = Real("b4", ip_address("198.18.1.14"), "02:00:00:00:00:0e", ifindex=EGRESS_IFINDEX)
B5_SEG2_VLAN = Real("b5", ip_address("198.18.1.15"), "02:00:00:00:00:0f", vlan=200, ifindex=EGRESS_IFINDEX)
B4_SEG2_6 = Real("b4v6", ip_address("2001:db8:1::14"), "02:00:00:00:00:1e", ifindex=EGRESS_IFINDEX)
B6_HERE = Real("b6", ip_address("198.18.0.16"), "02:00:00:00:00:16", ifindex=INGRESS_IFINDEX)
# Routed, behind the gateway: reached in tunnels.
T4_IPIP = Real("t4ipip", ip_address("198.18.5.20"), GATEWAY_MAC, tunnel="ipip")
T6_IPIP = Real("t6ipip", ip_address("2001:db8:5::20"), GATEWAY_MAC, tunnel="ipip")
T4_GUE = Real("t4gue", ip_address("198.18.5.21"), GATEWAY_MAC, tunnel="gue")
T6_GUE = Real("t6gue", ip_address("2001:db8:5::21"), GATEWAY_MAC, tunnel="gue")
T4_NO_ROUTE = Real("t4none", ip_address("198.18.6.20"), GATEWAY_MAC, tunnel="ipip")  # no route to it
REALS = {
    r.name: r
    for r in (
        B1,
        B2,
        B3_VLAN,
        B1_6,
        B2_6,
        B4_SEG2,
        B5_SEG2_VLAN,
        B4_SEG2_6,
        B6_HERE,
        T4_IPIP,
        T6_IPIP,
        T4_GUE,
        T6_GUE,
        T4_NO_ROUTE,
    )
}


def service(
    vip: config.IpAddress, port: int, proto: bpf.Protocol, *backends: bpf.Backend, sticky: bool = False
) -> bpf.Service:
    return bpf.Service(bpf.ServiceKey(vip, port, proto), tuple(backends), sticky=sticky, table_size=TABLE_SIZE)


SERVICES = {
    "web4": service(VIP4, 80, "tcp", B1.backend(), B2.backend()),
    "dns4": service(VIP4, 53, "udp", B1.backend(), B2.backend()),
    "web6": service(VIP6, 80, "tcp", B1_6.backend(), B2_6.backend()),
    "dns6": service(VIP6, 53, "udp", B1_6.backend(), B2_6.backend()),
    "sticky4": service(VIP4, 443, "tcp", B1.backend(), B2.backend(), sticky=True),
    "sticky6": service(VIP6, 443, "tcp", B1_6.backend(), B2_6.backend(), sticky=True),
    "vlan4": service(VIP4, 8080, "tcp", B3_VLAN.backend()),
    "empty4": service(VIP4, 81, "tcp"),
    "drain4": service(VIP4, 82, "tcp", B1.backend(weight=0), B2.backend()),
    # Backends on two interfaces: the ingress one (XDP_TX) and the second segment (XDP_REDIRECT).
    "split4": service(VIP4, 83, "tcp", B1.backend(), B4_SEG2.backend()),
    "seg2v4": service(VIP4, 84, "tcp", B4_SEG2.backend()),
    "seg2v6": service(VIP6, 84, "tcp", B4_SEG2_6.backend()),
    "seg2vlan4": service(VIP4, 85, "tcp", B5_SEG2_VLAN.backend()),
    "here4": service(VIP4, 86, "tcp", B6_HERE.backend()),
    # Tunnels, every family pair: "ipip46" is an IPv4 VIP's flows in IPv6 to the backend.
    "ipip44": service(VIP4, 100, "tcp", T4_IPIP.backend()),
    "ipip66": service(VIP6, 100, "tcp", T6_IPIP.backend()),
    "ipip46": service(VIP4, 101, "tcp", T6_IPIP.backend()),
    "ipip64": service(VIP6, 101, "tcp", T4_IPIP.backend()),
    "gue44": service(VIP4, 102, "udp", T4_GUE.backend()),
    "gue66": service(VIP6, 102, "tcp", T6_GUE.backend()),
    "gue46": service(VIP4, 103, "tcp", T6_GUE.backend()),
    "gue64": service(VIP6, 103, "udp", T4_GUE.backend()),
    "noroute4": service(VIP4, 104, "tcp", T4_NO_ROUTE.backend()),
}


# Replacements a stateful case applies after its first frames (``Case.reconfigure``).
VARIANTS = {
    "web4": service(VIP4, 80, "tcp", B1.backend(weight=0), B2.backend()),  # b1 draining: Maglev picks b2 only
    "web6": service(VIP6, 80, "tcp", B1_6.backend(weight=0), B2_6.backend()),
}


def program(plane: bpf.DataPlane) -> None:
    plane.set_interface_mac(INGRESS_IFINDEX, LB_MAC)
    plane.set_tunnel(TUNNEL_SOURCE4, TUNNEL_SOURCE6)
    plane.clear_flows()
    for spec in SERVICES.values():
        plane.set_service(spec)
