"""Cost per packet of the xdplb XDP program, side by side with a minimal MAC-swap XDP_TX program.

Run as root: ``make bench-dataplane``. Every figure is the kernel's own mean ns per repetition under
BPF_PROG_TEST_RUN, the least of many short runs taken round-robin over the cases, all in this one process: on a
shared VM other work only ever adds time, and comes in bursts (the median of 5 runs of one case moved by 40% from
one invocation to the next). The kernel does not reset the
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
from typing import Any, NamedTuple

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

# A tunnel grows the frame by its outer headers, and repetitions run on what the last one left: this wrapper takes
# them off again (any bytes beyond the FRAME_LEN it was given, the front of what is left read as Ethernet), then
# tail-calls the program under test. Its overhead is the new-flow wrapper's, plus one bpf_xdp_adjust_head.
RESTORE = r"""
#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>
BPF_PROG_ARRAY(next, 1);
int restore(struct xdp_md *ctx) {
    __u32 len = ctx->data_end - ctx->data;
    if (len > FRAME_LEN && bpf_xdp_adjust_head(ctx, len - FRAME_LEN))
        return XDP_ABORTED;
    void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return XDP_ABORTED;
    eth->h_proto = bpf_htons(ETH_P_IP);
    next.call(ctx, 0);
    return XDP_ABORTED;
}
"""

# The decap program takes FRAME_LEN - len bytes off; this wrapper puts them back (the frame's first HEAD_LEN bytes,
# as the benchmark wrote them into ``head``) before tail-calling it again. Its overhead, taken as that of the
# same wrapper around the minimal program, leaves out that adjust_head and copy: decap's figure is a ceiling.
RESTORE_OUTER = r"""
#include <uapi/linux/bpf.h>
struct head { __u8 bytes[HEAD_LEN]; };
BPF_PROG_ARRAY(next, 1);
BPF_ARRAY(head, struct head, 1);
int restore_outer(struct xdp_md *ctx) {
    __u32 zero = 0, len = ctx->data_end - ctx->data;
    if (len < FRAME_LEN) {
        struct head *h = head.lookup(&zero);
        if (!h || bpf_xdp_adjust_head(ctx, -(int)(FRAME_LEN - len)))
            return XDP_ABORTED;
        void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
        if (data + HEAD_LEN > data_end)
            return XDP_ABORTED;
        __builtin_memcpy(data, h->bytes, HEAD_LEN);
    }
    next.call(ctx, 0);
    return XDP_ABORTED;
}
"""

LB_MAC, CLIENT_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
VIP4, VIP6 = ip_address("192.0.2.100"), ip_address("2001:db8:100::100")


def frame(dst: object, *, flags: str = "A", src: str = "198.18.0.2", dport: int = 80) -> bytes:
    ip: Any = IP(src=src, dst=str(dst)) if ip_address(str(dst)).version == 4 else IPv6(src="2001:db8::2", dst=str(dst))
    return bytes(Ether(dst=LB_MAC, src=CLIENT_MAC) / ip / TCP(sport=40000, dport=dport, flags=flags) / (b"x" * 16))


class Case(NamedTuple):
    """One figure: a frame through a program; through the new-flow wrapper when ``via_wrapper``."""

    name: str
    fd: int
    data: bytes
    expect: str
    via_wrapper: bool = False


def measure(cases: list[Case], *, repeat: int, runs: int, wrapper: tuple[int, Any] | None = None) -> dict[str, float]:
    """Least ns/packet of each case over ``runs`` test runs of ``repeat`` repetitions, taken round-robin (one run of
    every case per round), so that a burst of interference on the host falls on all cases alike."""
    least = dict.fromkeys((case.name for case in cases), float("inf"))
    for _ in range(runs):
        for case in cases:
            fd = case.fd
            if case.via_wrapper:
                assert wrapper is not None
                fd, jump = wrapper
                jump[ctypes.c_int(0)] = ctypes.c_int(case.fd)
            result = testing.prog_test_run(fd, case.data, repeat=repeat)
            if result.verdict != case.expect:
                raise SystemExit(f"benchmark frame of {case.name} got {result.verdict}, expected {case.expect}")
            least[case.name] = min(least[case.name], result.duration_ns)
    return least


def load(settings: bpf.DataPlaneSettings) -> bpf.DataPlane:
    plane = bpf.DataPlane(settings)
    plane.setup()
    backends = tuple(bpf.Backend(ip_address(f"198.18.0.{10 + i}"), mac=f"02:00:00:00:01:{i:02x}") for i in range(8))
    backends6 = tuple(bpf.Backend(ip_address(f"2001:db8::{10 + i:x}"), mac=f"02:00:00:00:02:{i:02x}") for i in range(8))
    plane.set_service(bpf.Service(bpf.ServiceKey(VIP4, 80, "tcp"), backends))
    plane.set_service(bpf.Service(bpf.ServiceKey(VIP6, 80, "tcp"), backends6))
    return plane


def measure_segment(settings: bpf.DataPlaneSettings, minimal_fd: int, *, repeat: int, runs: int) -> dict[str, float]:
    from bcc import BPF

    """ns/packet of established flows that leave through another interface, round-robin with the minimal program:
    to a backend on that segment (XDP_REDIRECT), and to routed backends behind a gateway there, in IPIP and in
    GUE (the next hop from the FIB). In a lab namespace of its own, whose veth is that interface (a devmap entry
    names an interface of the caller's namespace) and where forwarding is on, as bpf_fib_lookup wants."""
    with Lab() as lab:
        host = lab.add_host("bench", ipv4="198.18.0.250")
        host.set_sysctl("net.ipv4.conf.all.forwarding", 1)
        with host.ipr() as ipr:
            ipr.neigh("add", dst="198.18.0.254", lladdr="02:00:00:00:00:fe", ifindex=host.ifindex, state=0x80)
            ipr.route("add", dst="198.18.5.0/24", gateway="198.18.0.254")
        with host.entered():
            plane = bpf.DataPlane(settings)
            plane.setup()
            try:
                plane.set_egress(host.ifindex, host.mac)
                plane.set_tunnel(ip_address(host.ipv4), None)
                backends = tuple(
                    bpf.Backend(ip_address(f"198.18.1.{10 + i}"), mac=f"02:00:00:00:03:{i:02x}", ifindex=host.ifindex)
                    for i in range(8)
                )
                plane.set_service(bpf.Service(bpf.ServiceKey(VIP4, 80, "tcp"), backends))
                cases = [
                    Case("minimal", minimal_fd, frame(VIP4), "XDP_TX"),
                    Case("redirect", plane.prog_fd, frame(VIP4), "XDP_REDIRECT"),
                ]
                restorer = BPF(text=RESTORE.encode(), cflags=[f"-DFRAME_LEN={len(frame(VIP4))}"])
                restore = (restorer.load_func(b"restore", BPF.XDP).fd, restorer[b"next"])
                cases.append(Case("restored_minimal", minimal_fd, frame(VIP4), "XDP_TX", via_wrapper=True))
                tunnels: tuple[tuple[int, bpf.Tunnel], ...] = ((81, "ipip"), (82, "gue"))
                for port, tunnel in tunnels:
                    routed = tuple(bpf.Backend(ip_address(f"198.18.5.{10 + i}"), tunnel=tunnel) for i in range(8))
                    plane.set_service(bpf.Service(bpf.ServiceKey(VIP4, port, "tcp"), routed))
                    cases.append(Case(tunnel, plane.prog_fd, frame(VIP4, dport=port), "XDP_REDIRECT", via_wrapper=True))
                for case in cases[1:]:
                    testing.prog_test_run(plane.prog_fd, case.data)  # establish the flow
                least = measure(cases, repeat=repeat, runs=runs, wrapper=restore)
                overhead = least["restored_minimal"] - least["minimal"]
                return {**least, "ipip": least["ipip"] - overhead, "gue": least["gue"] - overhead}
            finally:
                plane.cleanup()


def measure_decap(minimal_fd: int, *, repeat: int, runs: int) -> float:
    """ns/packet of the backend's decap program taking IPIP off a frame (round-robin with the minimal program under
    the same wrapper, whose cost is subtracted)."""
    from bcc import BPF

    from bpf import decap

    backend = ip_address("198.18.5.20")
    inner = bytes(IP(src="198.18.0.2", dst=str(VIP4)) / TCP(sport=40000, dport=80, flags="A") / (b"x" * 16))
    tunnelled = bytes(Ether(dst=CLIENT_MAC, src=LB_MAC) / IP(src="198.18.0.1", dst=str(backend), proto=4)) + inner
    head_len = len(tunnelled) - len(inner)
    program = decap.load(addresses=[backend])
    wrapper = BPF(text=RESTORE_OUTER.encode(), cflags=[f"-DFRAME_LEN={len(tunnelled)}", f"-DHEAD_LEN={head_len}"])
    try:
        table = wrapper[b"head"]
        table[table.Key(0)] = table.Leaf.from_buffer_copy(tunnelled[:head_len])
        restore = (wrapper.load_func(b"restore_outer", BPF.XDP).fd, wrapper[b"next"])
        least = measure(
            [
                Case("minimal", minimal_fd, tunnelled, "XDP_TX", via_wrapper=True),
                Case("decap", program.prog_fd, tunnelled, "XDP_PASS", via_wrapper=True),
            ],
            repeat=repeat,
            runs=runs,
            wrapper=restore,
        )
        if program.counters().ipip < repeat * runs:
            raise SystemExit("the decap benchmark's frames were not all taken off")
        return (
            least["decap"]
            - least["minimal"]
            + measure([Case("minimal", minimal_fd, tunnelled, "XDP_TX")], repeat=repeat, runs=runs)["minimal"]
        )
    finally:
        wrapper.cleanup()
        program.cleanup()


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

    testing.prog_test_run(inserting.prog_fd, frame(VIP4))  # establish the flows
    testing.prog_test_run(inserting.prog_fd, frame(VIP6))
    least = measure(
        [
            Case("minimal", minimal_fd, frame(VIP4), "XDP_TX"),
            Case("flow_hit", inserting.prog_fd, frame(VIP4), "XDP_TX"),
            Case("flow_hit_v6", inserting.prog_fd, frame(VIP6), "XDP_TX"),
            Case("not_a_vip", inserting.prog_fd, frame("192.0.2.200"), "XDP_PASS"),
            Case("wrapped_minimal", minimal_fd, frame(VIP4), "XDP_TX", via_wrapper=True),
            Case("new_flow", inserting.prog_fd, frame(VIP4), "XDP_TX", via_wrapper=True),
            Case("new_flow_no_insert", guarded.prog_fd, frame(VIP4), "XDP_TX", via_wrapper=True),
            Case("syn", inserting.prog_fd, frame(VIP4, flags="S"), "XDP_TX", via_wrapper=True),
        ],
        wrapper=(wrapper_fd, jump),
        **run,
    )
    inserted = inserting.read_counters().totals.flow_inserts
    for plane in (inserting, guarded):
        plane.cleanup()
    segment = measure_segment(
        bpf.DataPlaneSettings(flow_table_size=args.flow_table_size, new_flow_rate_limit=0), minimal_fd, **run
    )

    decap = measure_decap(minimal_fd, **run)

    wrapper_overhead = least["wrapped_minimal"] - least["minimal"]
    figures: dict[str, float] = {
        "minimal_ns": min(least["minimal"], segment["minimal"]),
        "flow_hit_ns": least["flow_hit"],
        "flow_hit_v6_ns": least["flow_hit_v6"],
        "not_a_vip_ns": least["not_a_vip"],
        "wrapper_overhead_ns": wrapper_overhead,
        **{f"{name}_ns": least[name] - wrapper_overhead for name in ("new_flow", "new_flow_no_insert", "syn")},
        "redirect_ns": segment["redirect"],
        "ipip_ns": segment["ipip"],
        "gue_ns": segment["gue"],
        "decap_ns": decap,
    }
    base = figures["minimal_ns"]
    ratios = {
        name.removesuffix("_ns") + "_ratio": round(value / base, 2)
        for name, value in figures.items()
        if name not in ("minimal_ns", "wrapper_overhead_ns")
    }
    print(f"{'case':<24}{'ns/packet':>10}{'x minimal':>11}")
    for name, value in figures.items():
        ratio = ratios.get(name.removesuffix("_ns") + "_ratio")
        print(f"{name.removesuffix('_ns'):<24}{value:>10.1f}{'' if ratio is None else f'{ratio:>10.2f}x'}")
    print(f"flow-table inserts during the run: {inserted} (table size {args.flow_table_size})")
    print(
        json.dumps(
            {
                **{k: round(v, 1) for k, v in figures.items()},
                **ratios,
                "repeat": args.repeat,
                "runs": args.runs,
                "flow_table_size": args.flow_table_size,
            }
        )
    )


if __name__ == "__main__":
    main()
