"""Taking over from an earlier run's program on a real interface: one atomic swap, and only from the program that
was found there (``XDP_FLAGS_REPLACE``): one attached meanwhile by someone else is never replaced unseen."""

import ctypes
import ipaddress
from collections.abc import Iterator

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

import bpf
from balancer.lab import xdp
from balancer.lab.netns import Host, Lab
from bpf import _abi, _xdp_programs, testing
from tests.bpf import world

pytestmark = pytest.mark.privileged


@pytest.fixture
def runs(lab: Lab) -> Iterator[tuple[Host, bpf.DataPlane, bpf.DataPlane]]:
    """The balancer's host and two runs' data planes for it, an earlier and a later one, not yet loaded. The later
    one detaches what it attached or took over; whatever else stays goes with the lab's interfaces."""
    host = lab.add_host("lb", ipv4="198.18.0.5")
    earlier = bpf.DataPlane(bpf.DataPlaneSettings(flow_table_size=1024))
    later = bpf.DataPlane(bpf.DataPlaneSettings(flow_table_size=1024))
    with host.entered():
        try:
            yield host, earlier, later
        finally:
            later.cleanup()
            earlier.cleanup(detach=False)


def test_the_swap_happens_only_from_the_program_found(lab: Lab) -> None:
    host = lab.add_host("lb", ipv4="198.18.0.5")
    earlier, later = bpf.DataPlane(bpf.DataPlaneSettings(flow_table_size=1024)), None
    with host.entered():
        try:
            earlier.setup()
            earlier.attach(host.ifname, "native")
            later = bpf.DataPlane(bpf.DataPlaneSettings(flow_table_size=1024))
            later.setup()
            found = later.earlier_program(host.ifname)
            assert found == bpf.EarlierProgram("native", earlier.prog_id)

            with host.ipr() as ipr:
                xdp.attach_pass(ipr, host.ifindex)  # someone else's program, in between
            other = _xdp_programs.attached(host.ifname)
            assert other is not None and other[1] != earlier.prog_id
            with pytest.raises(bpf.DataPlaneError, match="another program is attached"):
                later.take_over(host.ifname, found)
            assert _xdp_programs.attached(host.ifname) == other, "left as it was"
            assert later.earlier_program(host.ifname) is None, "not an xdplb program"

            earlier.attach(host.ifname, "native")  # back: now the swap goes through
            later.take_over(host.ifname, later.earlier_program(host.ifname) or found)
            assert _xdp_programs.attached(host.ifname) == ("native", later.prog_id)
            assert later.attached == {host.ifname: "native"}
        finally:
            if later is not None:
                later.cleanup()
            earlier.cleanup(detach=False)
            assert _xdp_programs.attached(host.ifname) is None, "the later one detached what it took over"


def test_state_is_carried_over_only_from_a_program_of_the_same_abi(
    runs: tuple[Host, bpf.DataPlane, bpf.DataPlane],
) -> None:
    """The earlier program's ``abi`` map says which ABI its maps have. Of another one (here: the value rewritten, as
    a program built from another ``XDPLB_ABI`` would hold), nothing is read: the counters start from zero, and the
    swap still goes through, so the new program runs with its own fresh maps."""
    host, earlier, later = runs
    earlier.setup()
    earlier.attach(host.ifname, "native")
    testing.prog_test_run(earlier.prog_fd, b"\0" * 64, repeat=40)  # 40 frames counted, none balanced
    assert earlier.read_totals().rx_packets >= 40  # and what the interface itself sees meanwhile
    later.setup()
    found = later.earlier_program(host.ifname)
    assert found is not None
    abi = earlier.table("abi")
    abi[ctypes.c_int(0)] = ctypes.c_uint32(_abi.ABI + 1)
    assert later.inherit(found) is False
    assert later.read_totals().rx_packets == 0, "nothing read from another ABI's maps"

    abi[ctypes.c_int(0)] = ctypes.c_uint32(_abi.ABI)
    assert later.inherit(found) is True
    carried = later.read_totals().rx_packets
    assert 40 <= carried <= earlier.read_totals().rx_packets, "the same ABI: the counters carry on"

    later.take_over(host.ifname, found)
    assert _xdp_programs.attached(host.ifname) == ("native", later.prog_id)


def _established(vip: ipaddress.IPv4Address, sport: int) -> bytes:
    """A client's established-flow segment (ACK, no SYN): forwarded and remembered in the flow table."""
    frame = (
        Ether(src=world.CLIENT_MAC, dst=world.LB_MAC)
        / IP(src=str(world.CLIENT4), dst=str(vip))
        / TCP(sport=sport, dport=80, flags="A")
    )
    return bytes(frame)


def test_only_what_the_new_config_also_has_is_carried_over(runs: tuple[Host, bpf.DataPlane, bpf.DataPlane]) -> None:
    """The earlier run served web (VIP .100) and old (VIP .101), both on b1; the new config has web and another
    service on b1 (VIP .102). web's counters and flows carry over; old's do not, though its backend has the same MAC,
    and nothing of it lands on the new service: state is matched by service and by backend, never by slot."""
    web, old, new = (ipaddress.IPv4Address(f"192.0.2.{last}") for last in (100, 101, 102))
    host, earlier, later = runs
    earlier.setup()
    for vip in (web, old):
        earlier.set_service(world.service(vip, 80, "tcp", world.B1.backend()))
    earlier.attach(host.ifname, "native")
    for sport in range(40000, 40010):
        for vip in (web, old):
            assert testing.prog_test_run(earlier.prog_fd, _established(vip, sport)).verdict == "XDP_TX"
    assert earlier.flow_table_entries()[4] == 20

    later.setup()
    for vip in (web, new):
        later.set_service(world.service(vip, 80, "tcp", world.B1.backend()))
    found = later.earlier_program(host.ifname)
    assert found is not None and later.inherit(found)
    counters = later.read_counters()
    key = {vip: bpf.ServiceKey(vip, 80, "tcp") for vip in (web, new)}
    assert counters.services[key[web]].packets == 10 and counters.backends[(key[web], world.B1.address)].packets == 10
    assert counters.services[key[new]] == bpf.ServiceCounters(), "old's counters are not new's"
    assert counters.backends[(key[new], world.B1.address)] == bpf.BackendCounters()
    assert later.flow_table_entries()[4] == 10, "web's ten flows, not old's"
