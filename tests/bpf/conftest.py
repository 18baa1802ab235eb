import http.client
import os
from collections.abc import Iterator

import pytest

import bpf
from balancer.lab.netns import Host, Lab
from tests.bpf import world


def require_bpf() -> None:
    """Skip on an unprivileged laptop; fail in CI, where these tests must run."""
    reason = None
    if os.geteuid() != 0:
        reason = "needs root for BPF"
    else:
        try:
            import bcc  # noqa: F401
        except ImportError:
            reason = "needs bcc (Debian python3-bpfcc) on this python"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and this test cannot run: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def loaded_plane() -> Iterator[bpf.DataPlane]:
    require_bpf()
    plane = bpf.DataPlane(world.SETTINGS)
    plane.setup()
    try:
        yield plane
    finally:
        plane.cleanup()


@pytest.fixture
def plane(loaded_plane: bpf.DataPlane) -> Iterator[bpf.DataPlane]:
    """The program loaded once per session, with the test world programmed afresh and empty flow tables."""
    world.program(loaded_plane)
    yield loaded_plane
    for key in list(loaded_plane.services):
        loaded_plane.remove_service(key)


@pytest.fixture(scope="module")
def egress_netns() -> Iterator[Host]:
    """A lab namespace to run packet cases in: its ``lo`` (ifindex 1) is the ingress interface and a veth made
    there with index ``world.EGRESS_IFINDEX`` the second segment. Devmap entries and test runs name ifindexes of
    the calling thread's namespace, so the cases run inside it. Removed with the lab, also on failure."""
    require_bpf()
    with Lab() as lab:
        host = lab.add_host("pkt", ipv4="198.18.0.250")
        name = f"{lab.run_id}-s2"
        with host.ipr() as ipr:
            ipr.link(
                "add",
                ifname=name,
                index=world.EGRESS_IFINDEX,
                kind="veth",
                peer={"ifname": f"{name}p"},
                address=world.EGRESS_MAC,
            )
            for ifname in (name, f"{name}p"):
                ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], state="up")
            assert ipr.link_lookup(ifname=name) == [world.EGRESS_IFINDEX]
            # Routed backends behind a gateway on the second segment, for the tunnels' FIB lookups.
            for cidr in world.SEGMENT2_ADDRESSES:
                address, length = cidr.split("/")
                ipr.addr(
                    "add", index=world.EGRESS_IFINDEX, address=address, prefixlen=int(length), flags=0x80
                )  # IFA_F_NODAD: usable at once
            for gateway in (world.GATEWAY4, world.GATEWAY6):
                ipr.neigh(
                    "add", dst=str(gateway), lladdr=world.GATEWAY_MAC, ifindex=world.EGRESS_IFINDEX, state=0x80
                )  # NUD_PERMANENT
            for prefix, gateway in world.ROUTED_PREFIXES:
                ipr.route("add", dst=prefix, gateway=str(gateway))
        for name in ("net.ipv4.conf.all.forwarding", "net.ipv6.conf.all.forwarding"):
            host.set_sysctl(name, 1)  # bpf_fib_lookup wants forwarding on (in this namespace only)
        yield host


@pytest.fixture
def packet_plane(plane: bpf.DataPlane, egress_netns: Host) -> Iterator[bpf.DataPlane]:
    """``plane`` with the second segment attached as an egress interface (in ``egress_netns``)."""
    with egress_netns.entered():
        plane.set_egress(world.INGRESS_IFINDEX, world.LB_MAC)
        plane.set_egress(world.EGRESS_IFINDEX, world.EGRESS_MAC)
        for spec in world.SERVICES.values():
            plane.set_service(spec)  # those with a backend on the second segment take it in now
    try:
        yield plane
    finally:
        with egress_netns.entered():
            plane.remove_egress(world.EGRESS_IFINDEX)
            plane.remove_egress(world.INGRESS_IFINDEX)


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A namespace lab of this test's own, removed at the end (also on failure)."""
    require_bpf()
    with Lab() as lab:
        yield lab


def get_page(client: Host, vip: str) -> str:
    """GET http://VIP/ from ``client``'s namespace: the answering backend's body (its name)."""
    with client.entered():
        conn = http.client.HTTPConnection(vip, 80, timeout=5)
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            assert response.status == 200
            return response.read().decode().strip()
        finally:
            conn.close()
