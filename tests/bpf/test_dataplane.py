"""Data-plane behaviour over many packets and across updates, on the real program in the kernel."""

import mmap
import os
import random
from collections import Counter
from ipaddress import ip_address

import pytest
from typing import Any

import bpf
from tests.bpf import predict, world
from tests.reference import flowhash
from tests.bpf.traffic import one_cpu, send, tcp, udp
from tests.bpf.world import B1, B1_6, B2, B2_6, service


def test_every_choice_equals_the_reference(plane: bpf.DataPlane) -> None:
    rng = random.Random(7)
    specs = [
        service(world.VIP4, 90, "tcp", B1.backend(weight=1), B2.backend(weight=3)),
        service(world.VIP4, 91, "udp", B1.backend(), B2.backend(weight=2), sticky=True),
        service(world.VIP6, 90, "tcp", B1_6.backend(weight=5), B2_6.backend(weight=2)),
    ]
    for spec in specs:
        plane.set_service(spec)
    mismatches = []
    for n in range(1500):
        spec = specs[n % len(specs)]
        vip = spec.key.vip
        src = (
            ip_address(rng.getrandbits(32))
            if vip.version == 4
            else ip_address((0x20010DB8 << 96) | rng.getrandbits(64))
        )
        sport = rng.randrange(1024, 65536)
        # SYNs and UDP through a sticky table: nothing is inserted, every packet is a Maglev choice.
        packet = (
            tcp(sport, spec.key.port, flags="S", src=src, dst=vip)
            if spec.key.proto == "tcp"
            else udp(sport, spec.key.port, src=src, dst=vip)
        )
        verdict, real = send(plane, packet)
        expected = predict.chosen_real(spec, packet).name
        if (verdict, real) != ("XDP_TX", expected):
            mismatches.append((str(packet.summary()), verdict, real, expected))
        if spec.key.proto == "udp":
            plane.clear_flows()
    assert mismatches == []


def test_sticky_service_sends_a_client_to_one_backend(plane: bpf.DataPlane) -> None:
    sticky = {send(plane, tcp(sport, 443, flags="S"))[1] for sport in range(20000, 20064)}
    spread = {send(plane, tcp(sport, 80, flags="S"))[1] for sport in range(20000, 20064)}
    assert len(sticky) == 1
    assert spread == {"b1", "b2"}


def _sport_choosing(spec: bpf.Service, name: str, start: int = 30000) -> int:
    return next(p for p in range(start, start + 1000) if predict.chosen_real(spec, tcp(p, spec.key.port)).name == name)


def test_draining_backend_keeps_established_flows_and_takes_no_new_ones(plane: bpf.DataPlane) -> None:
    both = service(world.VIP4, 92, "tcp", B1.backend(), B2.backend())
    plane.set_service(both)
    established = _sport_choosing(both, "b1")
    assert send(plane, tcp(established, 92)) == ("XDP_TX", "b1")

    status = plane.set_service(service(world.VIP4, 92, "tcp", B1.backend(weight=0), B2.backend()))
    assert [b.reason for b in status.backends] == ["draining (weight 0)", "active"]
    assert send(plane, tcp(established, 92)) == ("XDP_TX", "b1"), "established flow follows its entry"
    newcomer = _sport_choosing(both, "b1", start=established + 1)
    assert send(plane, tcp(newcomer, 92, flags="S")) == ("XDP_TX", "b2"), "new flows avoid the draining backend"
    assert send(plane, tcp(newcomer, 92)) == ("XDP_TX", "b2")


def test_removed_backend_flows_select_again(plane: bpf.DataPlane) -> None:
    both = service(world.VIP4, 93, "tcp", B1.backend(), B2.backend())
    plane.set_service(both)
    flow = _sport_choosing(both, "b1")
    assert send(plane, tcp(flow, 93)) == ("XDP_TX", "b1")
    plane.set_service(service(world.VIP4, 93, "tcp", B2.backend()))
    assert send(plane, tcp(flow, 93)) == ("XDP_TX", "b2")
    plane.set_service(service(world.VIP4, 93, "tcp"))
    assert send(plane, tcp(flow, 93)) == ("XDP_DROP", None)
    plane.remove_service(both.key)
    assert send(plane, tcp(flow, 93)) == ("XDP_PASS", None), "a removed service's traffic goes to the kernel"


def _has_flow(plane: bpf.DataPlane, sport: int, dport: int) -> bool:
    """Whether some flow-table entry holds this client flow to VIP4 (read the way the program writes it)."""
    key = predict.flow_key_bytes(world.CLIENT4, world.VIP4, sport, dport, 6)
    flows = plane.table("flows_v4")
    return any(bytes(entry.key) == key and entry.flow.generation for _, s in flows.items() for entry in s.way)


def test_syn_flood_does_not_evict_established_flows(plane: bpf.DataPlane) -> None:
    send(plane, tcp(50000, 80))
    assert _has_flow(plane, 50000, 80)
    for n in range(8 * world.SETTINGS.flow_table_size):
        send(plane, tcp(1024 + n, 80, flags="S", src=ip_address("198.18.1.0") + n))
    assert _has_flow(plane, 50000, 80), "SYNs create no entries, so they evict none"
    assert send(plane, tcp(50000, 80)) == ("XDP_TX", predict.chosen_real(world.SERVICES["web4"], tcp(50000, 80)).name)
    # The same number of first ACKs does evict it: the table is small enough for this test to fail.
    for n in range(8 * world.SETTINGS.flow_table_size):
        send(plane, tcp(1024 + n, 80, src=ip_address("198.18.1.0") + n))
    assert not _has_flow(plane, 50000, 80)


def test_counters_per_service_and_backend(plane: bpf.DataPlane) -> None:
    spec = world.SERVICES["dns4"]
    before = plane.read_counters()
    sent: Counter[str] = Counter()
    size = len(udp(1, 53))
    for sport in range(41000, 41040):
        sent[send(plane, udp(sport, 53))[1] or "none"] += 1
    after = plane.read_counters()
    svc_before, svc_after = before.services[spec.key], after.services[spec.key]
    assert svc_after.packets - svc_before.packets == 40
    assert svc_after.bytes - svc_before.bytes == 40 * size
    assert svc_after.new_flows - svc_before.new_flows == 40
    for real in (B1, B2):
        delta = after.backends[(spec.key, real.address)].packets - before.backends[(spec.key, real.address)].packets
        assert delta == sent[real.name]
    # 40 flows over the 64 sets of 4 ways: about one run in 25 a set gets a fifth, which evicts one of them.
    evicted = after.totals.flow_evictions - before.totals.flow_evictions
    assert plane.flow_table_entries()[4] == plane.count_flow_entries()[4] == 40 - evicted


def test_set_service_is_idempotent_and_never_rewrites_a_live_table(plane: bpf.DataPlane) -> None:
    services = plane.table("services_v4")
    key = plane._service_key(world.SERVICES["web4"].key)  # noqa: SLF001 - reading what the program reads
    first = bytes(services[key])
    plane.set_service(world.SERVICES["web4"])
    assert bytes(services[key]) == first, "same service again: nothing rewritten"

    tables = plane._table_store()  # noqa: SLF001 - reading what the program reads
    live = services[key]
    live_table = tables.read(live.table_id)
    plane.set_service(service(world.VIP4, 80, "tcp", B1.backend(), B2.backend(weight=2)))
    new = services[key]
    assert new.table_id != live.table_id
    assert tables.read(new.table_id) != live_table
    assert tables.read(live.table_id) == live_table, "the table readers may still hold is untouched"


def test_backend_without_mac_is_kept_out_and_says_why(plane: bpf.DataPlane) -> None:
    unresolved = bpf.Backend(ip_address("198.18.0.99"))
    status = plane.set_service(service(world.VIP4, 94, "tcp", unresolved, B2.backend()))
    assert [(str(b.address), b.reason, b.table_entries) for b in status.backends] == [
        ("198.18.0.99", "no MAC (neighbour unresolved)", 0),
        ("198.18.0.12", "active", world.TABLE_SIZE),
    ]
    assert {send(plane, tcp(p, 94, flags="S"))[1] for p in range(100, 140)} == {"b2"}


def test_bad_service_is_refused() -> None:
    with pytest.raises(bpf.DataPlaneError, match="not prime"):
        bpf.Service(bpf.ServiceKey(world.VIP4, 80, "tcp"), table_size=1000).validate()
    with pytest.raises(bpf.DataPlaneError, match="twice"):
        bpf.Service(bpf.ServiceKey(world.VIP4, 80, "tcp"), (B1.backend(), B1.backend())).validate()


def test_live_table_equals_the_reference_slot_for_slot(plane: bpf.DataPlane) -> None:
    spec = service(world.VIP6, 95, "tcp", B1_6.backend(weight=3), B2_6.backend(weight=4))
    plane.set_service(spec)
    live = plane.read_table(spec.key)
    assert live == [spec.backends[i].address for i in predict.reference_table(spec)]


def test_flood_guard_bypasses_inserts_above_the_rate_limit() -> None:
    from tests.bpf.conftest import require_bpf

    require_bpf()
    plane = bpf.DataPlane(
        bpf.DataPlaneSettings(flow_table_size=256, max_services=8, max_backends=16, new_flow_rate_limit=10)
    )
    plane.setup()
    try:
        plane.set_interface_mac(world.INGRESS_IFINDEX, world.LB_MAC)
        plane.set_service(world.SERVICES["web4"])
        with one_cpu():
            verdicts = [send(plane, tcp(2000 + n, 80))[0] for n in range(50)]
        totals = plane.read_counters().totals
        assert verdicts == ["XDP_TX"] * 50, "flows above the limit are still forwarded, just not remembered"
        assert totals.flow_inserts == 10
        assert totals.flood_guard_skips == 40
    finally:
        plane.cleanup()


def test_answer_ping_off_leaves_echo_to_the_kernel() -> None:
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
    from scapy.layers.l2 import Ether

    from tests.bpf.conftest import require_bpf

    require_bpf()
    plane = bpf.DataPlane(
        bpf.DataPlaneSettings(flow_table_size=256, max_services=len(world.SERVICES), max_backends=64, answer_ping=False)
    )
    plane.setup()
    try:
        world.program(plane)
        ether = Ether(dst=world.LB_MAC, src=world.CLIENT_MAC)
        for packet in (
            ether / IP(src=str(world.CLIENT4), dst=str(world.VIP4)) / ICMP(type=8),
            ether / IPv6(src=str(world.CLIENT6), dst=str(world.VIP6)) / ICMPv6EchoRequest(),
        ):
            assert send(plane, packet) == ("XDP_PASS", None)
        assert plane.read_counters().totals.icmp_echo_replies == 0
        assert send(plane, tcp(2000, 80))[0] == "XDP_TX"
    finally:
        plane.cleanup()


def _ports_in_one_set(plane: bpf.DataPlane, reals: list[str]) -> list[int]:
    """Client ports of ACKs to VIP4:80 whose flows share one flow-table set, the i-th going to ``reals[i]`` under
    web4 (``"*"``: any). Found with the program's own index hash and seed."""
    spec, sets = world.SERVICES["web4"], world.SETTINGS.flow_sets
    found: dict[int, list[int | None]] = {}
    for sport in range(42000, 62000):
        key = flowhash.flow_key(world.CLIENT4, world.VIP4, sport, 80, 6)
        ports = found.setdefault(flowhash.murmur3_32(key, plane.flow_seed) & (sets - 1), [None] * len(reals))
        real = predict.chosen_real(spec, tcp(sport, 80)).name
        for i, wanted in enumerate(reals):
            if ports[i] is None and wanted in ("*", real) and sport not in ports:
                ports[i] = sport
                break
        if all(p is not None for p in ports):
            return [p for p in ports if p is not None]
    raise AssertionError("no set found")


def _evictions(plane: bpf.DataPlane) -> int:
    return plane.read_counters().totals.flow_evictions


def test_a_stale_entry_is_replaced_in_place_and_a_draining_flow_stays(plane: bpf.DataPlane) -> None:
    """The issue's reproduction: A, B, C on b1 and F on b2 fill one set, A the least recently seen. b1 drains,
    b2 is removed. F's next packet selects again (b3) and must take F's own way, not A's: A stays on b1."""
    a, b, c, f = _ports_in_one_set(plane, ["b1", "b1", "b1", "b2"])
    for sport in (a, b, c, f):
        assert send(plane, tcp(sport, 80))[0] == "XDP_TX"
    plane.set_service(service(world.VIP4, 80, "tcp", B1.backend(weight=0), world.B3_VLAN.backend()))
    before = _evictions(plane)
    assert send(plane, tcp(f, 80)) == ("XDP_TX", "b3")
    assert [send(plane, tcp(sport, 80))[1] for sport in (a, b, c)] == ["b1", "b1", "b1"]
    assert send(plane, tcp(f, 80)) == ("XDP_TX", "b3")
    assert _evictions(plane) == before


def test_a_stale_entry_counts_as_free(plane: bpf.DataPlane) -> None:
    """A new flow in a full set takes the entry of a removed backend's flow, not the least recently seen live one."""
    a, b, c, f, g = _ports_in_one_set(plane, ["b1", "b1", "b1", "b2", "*"])
    for sport in (a, b, c, f):
        send(plane, tcp(sport, 80))
    plane.set_service(service(world.VIP4, 80, "tcp", B1.backend(weight=0), world.B3_VLAN.backend()))
    before = _evictions(plane)
    assert send(plane, tcp(g, 80)) == ("XDP_TX", "b3")
    assert [send(plane, tcp(sport, 80))[1] for sport in (a, b, c)] == ["b1", "b1", "b1"]
    assert all(_has_flow(plane, sport, 80) for sport in (a, b, c, g))
    assert not _has_flow(plane, f, 80)
    assert _evictions(plane) == before


def test_evicting_an_active_flow_is_counted(plane: bpf.DataPlane) -> None:
    ports = _ports_in_one_set(plane, ["*"] * 5)
    before = _evictions(plane)
    for sport in ports[:4]:
        send(plane, tcp(sport, 80))
    assert _evictions(plane) == before
    send(plane, tcp(ports[4], 80))
    assert _evictions(plane) == before + 1
    assert not _has_flow(plane, ports[0], 80), "the least recently seen entry is the one replaced"
    assert plane.flow_table_entries()[4] == 4 == plane.count_flow_entries()[4]


def test_active_flows_are_entries_seen_within_a_minute(plane: bpf.DataPlane) -> None:
    """Occupancy is real: an entry idle for over FLOW_ACTIVE_UNITS no longer counts, though it stays in its way."""
    for sport in range(43000, 43010):
        send(plane, tcp(sport, 80))
    in_table = plane.count_flow_entries()[4]
    assert plane.flow_table_entries()[4] == in_table >= 8
    flows = plane.table("flows_v4")
    for key, flow_set in list(flows.items()):
        for entry in flow_set.way:
            if entry.flow.generation:
                entry.seen -= 61
        flows[key] = flow_set
    assert plane.flow_table_entries()[4] == 0
    assert plane.count_flow_entries()[4] == in_table


def test_a_torn_entry_is_rewritten_in_its_own_way(plane: bpf.DataPlane) -> None:
    """An entry of the flow whose check word does not match (torn by two writers) is not followed: the flow
    selects again and is stored back into the same way, not into a second one."""
    sport = 43100
    send(plane, tcp(sport, 80))
    key = predict.flow_key_bytes(world.CLIENT4, world.VIP4, sport, 80, 6)
    flows = plane.table("flows_v4")
    for index, flow_set in list(flows.items()):
        for entry in flow_set.way:
            if bytes(entry.key) == key:
                entry.check ^= 1
                flows[index] = flow_set
    entries, totals = plane.count_flow_entries()[4], plane.read_counters().totals
    assert send(plane, tcp(sport, 80)) == ("XDP_TX", predict.chosen_real(world.SERVICES["web4"], tcp(sport, 80)).name)
    after = plane.read_counters().totals
    assert (after.flow_misses - totals.flow_misses, after.flow_inserts - totals.flow_inserts) == (1, 1)
    assert plane.count_flow_entries()[4] == entries
    send(plane, tcp(sport, 80))
    assert plane.read_counters().totals.flow_hits == after.flow_hits + 1


def test_in_a_machines_first_minute_empty_entries_are_not_active_flows(
    plane: bpf.DataPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty entry's last-seen time is 0: within a minute of boot that is not "seen within a minute"."""
    send(plane, tcp(43200, 80))
    monkeypatch.setattr("bpf.dataplane.time.clock_gettime_ns", lambda clock: 10 << 30)
    assert plane.flow_table_entries()[4] == 1


def test_a_pushed_vlan_tag_is_counted_per_service_and_backend(plane: bpf.DataPlane) -> None:
    spec = world.SERVICES["vlan4"]
    packet = tcp(41100, 8080)
    before = plane.read_counters()
    assert send(plane, packet) == ("XDP_TX", "b3")
    after = plane.read_counters()
    backend = (spec.key, world.B3_VLAN.address)
    for old, new in (
        (before.services[spec.key], after.services[spec.key]),
        (before.backends[backend], after.backends[backend]),
    ):
        assert (new.packets - old.packets, new.bytes - old.bytes) == (1, len(packet) + 4)


# Runs NEXT on a frame of FRAME_LEN bytes with less than 4 bytes of headroom left: it takes the headroom in
# halving steps (the kernel refuses a step that would leave too little), moves the frame back to the start and
# trims the tail. BPF_PROG_TEST_RUN on its own always leaves at least 224 bytes.
NO_HEADROOM = r"""
#include <uapi/linux/bpf.h>
BPF_PROG_ARRAY(next, 1);
static long (*load_bytes)(struct xdp_md *, __u32, void *, __u32) = (void *)BPF_FUNC_xdp_load_bytes;
static long (*store_bytes)(struct xdp_md *, __u32, void *, __u32) = (void *)BPF_FUNC_xdp_store_bytes;
#define TAKE(step) if (bpf_xdp_adjust_head(ctx, -(step)) == 0) taken += (step)
int no_headroom(struct xdp_md *ctx) {
    __u8 frame[FRAME_LEN];
    __u32 taken = 0;
    if (ctx->data_end - ctx->data != FRAME_LEN)
        return XDP_ABORTED;
    TAKE(256); TAKE(128); TAKE(64); TAKE(32); TAKE(16); TAKE(8); TAKE(4);
    if (load_bytes(ctx, taken, frame, FRAME_LEN) || store_bytes(ctx, 0, frame, FRAME_LEN)
        || bpf_xdp_adjust_tail(ctx, -(int)taken))
        return XDP_ABORTED;
    next.call(ctx, 0);
    return XDP_ABORTED;
}
"""


def test_a_vlan_push_without_headroom_drops_the_frame_and_counts_it(plane: bpf.DataPlane) -> None:
    import ctypes

    from bcc import BPF

    from bpf import testing

    forwarded, pushed = tcp(41102, 80), tcp(41103, 8080)
    assert len(forwarded) == len(pushed)
    wrapper = BPF(text=NO_HEADROOM.encode(), cflags=[f"-DFRAME_LEN={len(pushed)}"])
    try:
        wrapper[b"next"][ctypes.c_int(0)] = ctypes.c_int(plane.prog_fd)
        fd = wrapper.load_func(b"no_headroom", BPF.XDP).fd
        untagged = predict.chosen_real(world.SERVICES["web4"], forwarded)
        run = testing.prog_test_run(fd, bytes(forwarded), ingress_ifindex=world.INGRESS_IFINDEX)
        assert (run.verdict, run.data) == ("XDP_TX", predict.forwarded(forwarded, untagged)), (
            "the wrapper itself keeps the frame whole"
        )
        before = plane.read_counters().totals
        run = testing.prog_test_run(fd, bytes(pushed), ingress_ifindex=world.INGRESS_IFINDEX)
        after = plane.read_counters().totals
        assert (run.verdict, run.data) == ("XDP_DROP", bytes(pushed))
        assert (after.drop_vlan_push - before.drop_vlan_push, after.forwarded - before.forwarded) == (1, 0)
    finally:
        wrapper.cleanup()


def _resident_bytes(path: str) -> int:
    """Resident bytes of this process's mappings of ``path``, from /proc/self/smaps."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        fields = line.split()
        if fields and "-" in fields[0] and not fields[0].endswith(":"):
            inside = len(fields) == 6 and fields[5] == path
        elif inside and fields[0] == "Rss:":
            total += int(fields[1]) * 1024
    return total


def test_the_compilers_pages_are_handed_back(tmp_path: Any) -> None:
    """On a mapping only this process has (the compiler's own pages may be shared with another process's compile,
    and the kernel keeps shared pages): a library by one of the compiler's names, read in, then released."""
    from bpf import _compiler_pages

    library = tmp_path / "libLLVM-xdplb-test.so.1"
    with open(library, "wb") as out:
        out.write(os.urandom(8 << 20))
        out.flush()
        os.fsync(out.fileno())  # clean pages: reclaimable without writing them back
    with open(library, "rb") as file, mmap.mmap(file.fileno(), 0, prot=mmap.PROT_READ) as mapped:
        assert sum(mapped[offset] for offset in range(0, len(mapped), 4096)) >= 0  # every page read in
        before = _resident_bytes(str(library))
        assert before >= 7 << 20, f"{before >> 20} MiB resident"
        assert _compiler_pages.release() >= 8 << 20
        assert _resident_bytes(str(library)) < before // 4
        assert mapped[:4096] == library.read_bytes()[:4096], "the contents are the same, read again"


def test_a_compile_hands_the_compilers_pages_back_and_a_later_compile_still_works(
    loaded_plane: bpf.DataPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bpf import _compiler_pages, check_path

    released: list[int] = []
    real = _compiler_pages.release

    def release() -> int:
        released.append(real())
        return released[-1]

    monkeypatch.setattr(_compiler_pages, "release", release)
    plane = bpf.DataPlane(world.SETTINGS)
    try:
        plane.setup()
    finally:
        plane.cleanup()
    assert released and released[0] > 0, "the daemon's compile asked for the compiler's pages to go"
    check_path.load().cleanup()  # compiles again after the release, from pages read back in
