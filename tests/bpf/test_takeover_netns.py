"""Taking over from an earlier run's program on a real interface: one atomic swap, and only from the program that
was found there (``XDP_FLAGS_REPLACE``): one attached meanwhile by someone else is never replaced unseen."""

import pytest

import bpf
from balancer.lab import xdp
from balancer.lab.netns import Lab
from bpf import _xdp_programs

pytestmark = pytest.mark.privileged


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
