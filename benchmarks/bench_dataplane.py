"""Cost per packet of the xdplb XDP program, side by side with a minimal MAC-swap XDP_TX program.

Run as root: ``make bench-dataplane``. Every figure is the kernel's own mean ns per repetition under
BPF_PROG_TEST_RUN, the least of many short runs, all measured in this one process: on a shared VM other work only
ever adds time (the same case's median moved by 40% from one run to the next, its minimum by a few ns). The kernel does not reset the
frame between repetitions, so new-flow figures go through a wrapper program that writes a fresh source address
from a per-iteration counter and tail-calls the program under test; the wrapper's own cost (measured by
tail-calling the minimal program the same way) is subtracted. ``redirect`` is an established flow whose backend
is on another interface than the ingress one (XDP_REDIRECT through the devmap): measured in a lab namespace of
its own, whose veth is that interface (a devmap entry names an interface of the caller's namespace). The last line
is one JSON object.
"""

import argparse
import ctypes
import json
import sys
from ipaddress import ip_address
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scapy.layers.inet import IP, TCP  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402

import bpf  # noqa: E402
from bpf import testing  # noqa: E402
from balancer.lab.netns import Lab  # noqa: E402

MINIMAL = r"""
#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>
int minimal(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return XDP_DROP;
    unsigned char tmp[ETH_ALEN];
    __builtin_memcpy(tmp, eth->h_dest, ETH_ALEN);
    __builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
    __builtin_memcpy(eth->h_source, tmp, ETH_ALEN);
    return XDP_TX;
}
"""

WRAPPER = r"""
#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/tcp.h>
BPF_PROG_ARRAY(next, 1);
BPF_ARRAY(iteration, __u32, 1);
int new_source(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
    struct iphdr *ip = data + sizeof(struct ethhdr);
    struct tcphdr *tcp = (void *)(ip + 1);  /* the benchmark's frames carry no IP options */
    if ((void *)(tcp + 1) > data_end)
        return XDP_ABORTED;
    __u32 zero = 0;
    __u32 *n = iteration.lookup(&zero);
    if (!n)
        return XDP_ABORTED;
    *n += 1;
    /* A new flow every iteration: 2^17 sources in 198.18.0.0/15 times 2^15 source ports. */
    ip->saddr = bpf_htonl(0xc6120000 | (*n & 0x1ffff));
    tcp->source = bpf_htons(1024 + ((*n >> 17) & 0x7fff));
    next.call(ctx, 0);
    return XDP_ABORTED;
}
"""

LB_MAC, CLIENT_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
VIP4, VIP6 = ip_address("192.0.2.100"), ip_address("2001:db8:100::100")


def frame(dst: object, *, flags: str = "A", src: str = "198.18.0.2") -> bytes:
    ip: Any = IP(src=src, dst=str(dst)) if ip_address(str(dst)).version == 4 else IPv6(src="2001:db8::2", dst=str(dst))
    return bytes(Ether(dst=LB_MAC, src=CLIENT_MAC) / ip / TCP(sport=40000, dport=80, flags=flags) / (b"x" * 16))


def measure(fd: int, data: bytes, *, repeat: int, runs: int, expect: str) -> float:
    """Least ns/packet over ``runs`` test runs of ``repeat`` repetitions."""
    durations = []
    for _ in range(runs):
        result = testing.prog_test_run(fd, data, repeat=repeat)
        if result.verdict != expect:
            raise SystemExit(f"benchmark frame got {result.verdict}, expected {expect}")
        durations.append(result.duration_ns)
    return float(min(durations))


def load(settings: bpf.DataPlaneSettings) -> bpf.DataPlane:
    plane = bpf.DataPlane(settings)
    plane.setup()
    backends = tuple(bpf.Backend(ip_address(f"198.18.0.{10 + i}"), mac=f"02:00:00:00:01:{i:02x}") for i in range(8))
    backends6 = tuple(bpf.Backend(ip_address(f"2001:db8::{10 + i:x}"), mac=f"02:00:00:00:02:{i:02x}") for i in range(8))
    plane.set_service(bpf.Service(bpf.ServiceKey(VIP4, 80, "tcp"), backends))
    plane.set_service(bpf.Service(bpf.ServiceKey(VIP6, 80, "tcp"), backends6))
    return plane


def measure_redirect(settings: bpf.DataPlaneSettings, *, repeat: int, runs: int) -> float:
    """ns/packet of an established flow whose backend is on a second interface: XDP_REDIRECT."""
    with Lab() as lab:
        host = lab.add_host("bench", ipv4="198.18.0.250")
        with host.entered():
            plane = bpf.DataPlane(settings)
            plane.setup()
            try:
                plane.set_egress(host.ifindex, host.mac)
                backends = tuple(bpf.Backend(ip_address(f"198.18.1.{10 + i}"), mac=f"02:00:00:00:03:{i:02x}",
                                             ifindex=host.ifindex) for i in range(8))
                plane.set_service(bpf.Service(bpf.ServiceKey(VIP4, 80, "tcp"), backends))
                testing.prog_test_run(plane.prog_fd, frame(VIP4))  # establish the flow
                return measure(plane.prog_fd, frame(VIP4), repeat=repeat, runs=runs, expect="XDP_REDIRECT")
            finally:
                plane.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200_000, help="repetitions per test run")
    parser.add_argument("--runs", type=int, default=25, help="test runs per figure (the least is reported)")
    parser.add_argument("--flow-table-size", type=int, default=65536)
    args = parser.parse_args()
    from bcc import BPF

    bpf.ensure_kernel_source()
    minimal_obj = BPF(text=MINIMAL)
    minimal_fd = minimal_obj.load_func(b"minimal", BPF.XDP).fd
    wrapper_obj = BPF(text=WRAPPER)
    wrapper_fd = wrapper_obj.load_func(b"new_source", BPF.XDP).fd
    jump = wrapper_obj[b"next"]

    # Inserts on: the flood guard is off so every new flow pays for its insert (the table fills, then evicts).
    inserting = load(bpf.DataPlaneSettings(flow_table_size=args.flow_table_size, new_flow_rate_limit=0))
    # Flood guard at its lowest: new flows are forwarded without an insert, the path taken under a flood.
    guarded = load(bpf.DataPlaneSettings(flow_table_size=args.flow_table_size, new_flow_rate_limit=1))
    run = {"repeat": args.repeat, "runs": args.runs}

    figures: dict[str, float] = {}
    figures["minimal_ns"] = measure(minimal_fd, frame(VIP4), expect="XDP_TX", **run)
    testing.prog_test_run(inserting.prog_fd, frame(VIP4))  # establish the flow
    figures["flow_hit_ns"] = measure(inserting.prog_fd, frame(VIP4), expect="XDP_TX", **run)
    testing.prog_test_run(inserting.prog_fd, frame(VIP6))
    figures["flow_hit_v6_ns"] = measure(inserting.prog_fd, frame(VIP6), expect="XDP_TX", **run)
    figures["not_a_vip_ns"] = measure(inserting.prog_fd, frame("192.0.2.200"), expect="XDP_PASS", **run)

    def through_wrapper(fd: int, data: bytes) -> float:
        jump[ctypes.c_int(0)] = ctypes.c_int(fd)
        return measure(wrapper_fd, data, expect="XDP_TX", **run)

    wrapper_overhead = through_wrapper(minimal_fd, frame(VIP4)) - figures["minimal_ns"]
    figures["wrapper_overhead_ns"] = wrapper_overhead
    figures["new_flow_ns"] = through_wrapper(inserting.prog_fd, frame(VIP4)) - wrapper_overhead
    figures["new_flow_no_insert_ns"] = through_wrapper(guarded.prog_fd, frame(VIP4)) - wrapper_overhead
    figures["syn_ns"] = through_wrapper(inserting.prog_fd, frame(VIP4, flags="S")) - wrapper_overhead
    inserted = inserting.read_counters().totals.flow_inserts
    for plane in (inserting, guarded):
        plane.cleanup()
    figures["redirect_ns"] = measure_redirect(
        bpf.DataPlaneSettings(flow_table_size=args.flow_table_size, new_flow_rate_limit=0), **run)

    base = figures["minimal_ns"]
    ratios = {name.removesuffix("_ns") + "_ratio": round(value / base, 2) for name, value in figures.items()
              if name not in ("minimal_ns", "wrapper_overhead_ns")}
    print(f"{'case':<24}{'ns/packet':>10}{'x minimal':>11}")
    for name, value in figures.items():
        ratio = ratios.get(name.removesuffix("_ns") + "_ratio")
        print(f"{name.removesuffix('_ns'):<24}{value:>10.1f}{'' if ratio is None else f'{ratio:>10.2f}x'}")
    print(f"flow-table inserts during the run: {inserted} (table size {args.flow_table_size})")
    print(json.dumps({**{k: round(v, 1) for k, v in figures.items()}, **ratios,
                      "repeat": args.repeat, "runs": args.runs, "flow_table_size": args.flow_table_size}))


if __name__ == "__main__":
    main()
