"""The loader's side of egress interfaces: a backend on an interface that is not attached takes no flows, and
comes in when the interface does (and goes out when it goes)."""

import bpf
from bpf import testing
from balancer.lab.netns import Host
from tests.bpf import world
from tests.bpf.traffic import tcp


def _reasons(status: bpf.ServiceStatus) -> dict[str, str]:
    return {str(b.address): b.reason for b in status.backends}


def test_a_backend_on_an_interface_not_attached_takes_no_flows_until_it_is(
    packet_plane: bpf.DataPlane, egress_netns: Host
) -> None:
    spec = world.SERVICES["split4"]
    b1, b4 = str(world.B1.address), str(world.B4_SEG2.address)
    with egress_netns.entered():
        assert _reasons(packet_plane.services[spec.key]) == {b1: "active", b4: "active"}

        packet_plane.remove_egress(world.EGRESS_IFINDEX)  # what detach() does
        assert packet_plane.needs_update(spec), "the same spec is written again: its interface went"
        status = packet_plane.set_service(spec)
        assert _reasons(status) == {b1: "active", b4: f"interface {world.EGRESS_IFINDEX} not attached"}
        assert packet_plane.read_table(spec.key) == [world.B1.address] * world.TABLE_SIZE
        for sport in range(41000, 41020):  # every new flow goes to b1, none is dropped
            run = testing.prog_test_run(
                packet_plane.prog_fd, bytes(tcp(sport, 83)), ingress_ifindex=world.INGRESS_IFINDEX
            )
            assert run.verdict == "XDP_TX"

        packet_plane.set_egress(world.EGRESS_IFINDEX, world.EGRESS_MAC)  # what attach() does
        assert packet_plane.needs_update(spec)
        assert _reasons(packet_plane.set_service(spec)) == {b1: "active", b4: "active"}
        assert not packet_plane.needs_update(spec)
        assert not packet_plane.needs_update(world.SERVICES["web4"]), "services without such backends stay"
