"""The lab carries layer-2 DSR: an XDP_TX MAC rewrite on the balancer host delivers the client to a backend."""

import ctypes
import http.client
from typing import Any, Iterator

import pytest

import bpf
from balancer.lab.netns import Host, Lab

pytestmark = pytest.mark.privileged

VIP = "192.0.2.10"
LB_MAC = "02:00:5e:00:00:05"
B1_MAC = "02:00:5e:00:00:11"
XDP_FLAGS = {"generic": 1 << 1, "native": 1 << 2}  # XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE

# The smallest L2 DSR balancer: frames for the VIP go back out the same interface to the one backend.
_PROGRAM = r"""
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
BPF_ARRAY(tx, u64, 1);
int dsr(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end || eth->h_proto != htons(ETH_P_IP)) return XDP_PASS;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end || ip->daddr != htonl(0xc000020a)) return XDP_PASS;  /* 192.0.2.10 */
    unsigned char backend[ETH_ALEN] = {BACKEND}, self[ETH_ALEN] = {SELF};
    __builtin_memcpy(eth->h_dest, backend, ETH_ALEN);
    __builtin_memcpy(eth->h_source, self, ETH_ALEN);  /* else the bridge learns the client's MAC on our port */
    int zero = 0;
    u64 *count = tx.lookup(&zero);
    if (count) __sync_fetch_and_add(count, 1);
    return XDP_TX;
}
int pass(struct xdp_md *ctx) { return XDP_PASS; }
"""


def _c_mac(mac: str) -> str:
    return ", ".join(f"0x{part}" for part in mac.split(":"))


@pytest.fixture(scope="module")
def program() -> Any:
    bpf.ensure_kernel_source()
    from bcc import BPF

    return BPF(text=_PROGRAM.replace("BACKEND", _c_mac(B1_MAC)).replace("SELF", _c_mac(LB_MAC)).encode())


def _get(client: Host) -> str:
    with client.entered():
        conn = http.client.HTTPConnection(VIP, 80, timeout=5)
        try:
            conn.request("GET", "/")
            return conn.getresponse().read().decode()
        finally:
            conn.close()


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        yield lab


@pytest.mark.parametrize("mode", ["generic", "native"])
def test_client_reaches_backend_through_xdp_tx_on_the_balancer_host(lab: Lab, program: Any, mode: str) -> None:
    from bcc import BPF

    client = lab.add_host("client", ipv4="198.18.0.2")
    lb = lab.add_host("lb", ipv4="198.18.0.5", mac=LB_MAC)
    b1 = lab.add_host("b1", ipv4="198.18.0.11", mac=B1_MAC)
    b1.add_vip_on_loopback(VIP)
    b1.start_http_backend("b1", 80)
    client.add_route(f"{VIP}/32", via=lb.ipv4)
    if mode == "native":
        # Field notes: native XDP_TX on a veth needs an XDP program on the peer, and loses partial checksums.
        client.disable_tx_checksum_offload()
        b1.disable_tx_checksum_offload()
        with lab.switch_entered():
            program.attach_xdp(lb.port.encode(), program.load_func(b"pass", BPF.XDP), XDP_FLAGS[mode])
    counter = program[b"tx"]
    counter[ctypes.c_int(0)] = ctypes.c_uint64(0)
    with lb.entered():
        program.attach_xdp(lb.ifname.encode(), program.load_func(b"dsr", BPF.XDP), XDP_FLAGS[mode])
    try:
        assert [_get(client) for _ in range(3)] == ["b1\n"] * 3
    finally:
        with lb.entered():
            program.remove_xdp(lb.ifname.encode(), XDP_FLAGS[mode])
    assert counter[ctypes.c_int(0)].value >= 3 * 3, "each request's packets went through the balancer's XDP_TX"
