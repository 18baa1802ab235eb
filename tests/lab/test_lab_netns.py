"""The namespace lab: hosts on one bridge, DSR backends, thread-only namespace entry, and teardown."""

import errno
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator, TypedDict

import aiohttp
import pytest
from pyroute2 import IPRoute

from balancer.lab import forward, http_backend, registry
from balancer.lab.netns import Host, Lab, LabError

pytestmark = pytest.mark.privileged

VIP4 = "192.0.2.10"
VIP6 = "2001:db8:100::10"


def get(client: Host, address: str, port: int = 80, path: str = "/") -> tuple[str, str]:
    """GET from inside ``client``'s namespace; return (X-Backend header, body)."""
    with client.entered():
        conn = http.client.HTTPConnection(address, port, timeout=5)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            assert response.status == 200
            return response.getheader("X-Backend", ""), response.read().decode()
        finally:
            conn.close()


def netns_names() -> set[str]:
    return set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        yield lab


@pytest.fixture
def trio(lab: Lab) -> tuple[Host, Host, Host]:
    """A client and two backends, each serving HTTP on port 80."""
    client = lab.add_host("client", ipv4="198.18.0.2", ipv6="2001:db8::2")
    b1 = lab.add_host("b1", ipv4="198.18.0.11", ipv6="2001:db8::11", mac="02:00:5e:00:00:11")
    b2 = lab.add_host("b2", ipv4="198.18.0.12", ipv6="2001:db8::12")
    b1.start_http_backend("b1", 80)
    b2.start_http_backend("b2", 80)
    return client, b1, b2


def test_client_reaches_each_backend_over_the_bridge(trio: tuple[Host, Host, Host]) -> None:
    client, b1, b2 = trio
    assert b1.mac == "02:00:5e:00:00:11"
    for backend in (b1, b2):
        assert backend.ipv6 is not None
        assert get(client, backend.ipv4) == (backend.name, f"{backend.name}\n")
        assert get(client, backend.ipv6, path="/x") == (backend.name, f"{backend.name}\n")


def test_dsr_backend_answers_for_the_vip_routed_through_it(trio: tuple[Host, Host, Host]) -> None:
    client, b1, b2 = trio
    root_arp_ignore = Path("/proc/sys/net/ipv4/conf/all/arp_ignore").read_text()
    for backend in (b1, b2):
        backend.add_vip_on_loopback(VIP4)
        backend.add_vip_on_loopback(VIP6)
        assert backend.get_sysctl("net.ipv4.conf.all.arp_ignore") == "1"
        assert backend.get_sysctl(f"net.ipv4.conf.{backend.ifname}.arp_announce") == "2"
        assert backend.get_sysctl("net.ipv4.conf.all.rp_filter") == "0"
    assert Path("/proc/sys/net/ipv4/conf/all/arp_ignore").read_text() == root_arp_ignore, "sysctls stay inside"
    assert b1.ipv6 is not None and b2.ipv6 is not None
    # A TCP handshake to the VIP completes only if the SYN-ACK comes from the VIP: the reply is the VIP's.
    for via in (b1, b2):
        client.add_route(f"{VIP4}/32", via=via.ipv4)
        client.add_route(f"{VIP6}/128", via=via.ipv6)
        assert get(client, VIP4) == (via.name, f"{via.name}\n")
        assert get(client, VIP6) == (via.name, f"{via.name}\n")


def _neigh_state(host: Host, address: str) -> int:
    with host.ipr() as ipr:
        entries = [n for n in ipr.neigh("dump") if n.get("NDA_DST") == address]
    return int(entries[0]["state"]) if entries else 0


def test_vip_on_loopback_is_not_announced_by_arp(lab: Lab) -> None:
    client = lab.add_host("client", ipv4="198.18.0.2")
    b1 = lab.add_host("b1", ipv4="198.18.0.11")
    b1.start_http_backend("b1", 80)
    b1.add_vip_on_loopback(VIP4)
    # Give up on ARP after two probes 200 ms apart rather than three a second apart.
    client.set_sysctl(f"net.ipv4.neigh.{client.ifname}.mcast_solicit", 2)
    client.set_sysctl(f"net.ipv4.neigh.{client.ifname}.retrans_time_ms", 200)
    client.add_route(f"{VIP4}/32")  # on-link: the client ARPs for the VIP itself
    with pytest.raises(OSError) as failed:
        get(client, VIP4)
    assert isinstance(failed.value, TimeoutError) or failed.value.errno == errno.EHOSTUNREACH
    nud_failed, nud_incomplete = 0x20, 0x01
    assert _neigh_state(client, VIP4) in (0, nud_failed, nud_incomplete), "nobody answered ARP for the VIP"
    # Control: with Linux's default arp_ignore the backend does answer for its loopback VIP.
    for conf in ("all", b1.ifname):
        b1.set_sysctl(f"net.ipv4.conf.{conf}.arp_ignore", 0)
    assert get(client, VIP4) == ("b1", "b1\n")


def test_entered_moves_only_the_current_thread_and_restores_it(lab: Lab) -> None:
    host = lab.add_host("h1", ipv4="198.18.0.3")
    here = os.stat("/proc/thread-self/ns/net").st_ino
    there = os.stat(f"/run/netns/{host.netns}").st_ino
    assert here != there
    seen_by_other_thread: list[int] = []
    look = threading.Event()

    def other_thread() -> None:  # started before entering: new threads inherit their creator's namespace
        look.wait(10)
        seen_by_other_thread.append(os.stat("/proc/thread-self/ns/net").st_ino)

    other = threading.Thread(target=other_thread)
    other.start()
    with host.entered():
        assert os.stat("/proc/thread-self/ns/net").st_ino == there
        look.set()
        other.join()
        with IPRoute() as ipr:
            assert ipr.link_lookup(ifname=host.ifname) == [host.ifindex]
    assert seen_by_other_thread == [here]
    assert os.stat("/proc/thread-self/ns/net").st_ino == here
    with pytest.raises(ZeroDivisionError), host.entered():
        1 / 0
    assert os.stat("/proc/thread-self/ns/net").st_ino == here


def test_run_joins_only_the_network_namespace(lab: Lab) -> None:
    host = lab.add_host("h1", ipv4="198.18.0.3")
    probe = "import os; print(os.stat('/proc/self/ns/net').st_ino, os.stat('/proc/self/ns/mnt').st_ino)"
    out = host.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.split()
    assert int(out[0]) == os.stat(f"/run/netns/{host.netns}").st_ino
    assert int(out[1]) == os.stat("/proc/self/ns/mnt").st_ino, "no new mount namespace: /sys/fs/bpf stays visible"


def test_sysctls_and_offloads_change_inside_the_namespace_only(lab: Lab) -> None:
    host = lab.add_host("h1", ipv4="198.18.0.3")
    root_forwarding = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    host.set_sysctl("net.ipv4.ip_forward", 1 - int(root_forwarding))
    assert host.get_sysctl("net.ipv4.ip_forward") == str(1 - int(root_forwarding))
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == root_forwarding
    with pytest.raises(LabError, match="only net"):
        host.set_sysctl("kernel.panic", 0)
    assert host.tx_checksum_offload()
    host.disable_tx_checksum_offload()
    assert not host.tx_checksum_offload()


def test_names_are_unique_per_run_and_fit_in_ifnamsiz() -> None:
    with Lab() as first, Lab() as second:
        assert first.run_id != second.run_id
        for lab in (first, second):
            host = lab.add_host("client", ipv4="198.18.0.2")
            with IPRoute(netns=lab.switch_netns, flags=0) as ipr:
                switch_ifnames = [link.get("ifname") for link in ipr.link("dump") if link.get("ifname") != "lo"]
            assert sorted(switch_ifnames) == [f"{lab.run_id}-br", f"{lab.run_id}-p0"]
            for name in [*switch_ifnames, host.ifname]:
                assert name.startswith(lab.run_id) and len(name) <= 15
            assert all(name.startswith(lab.run_id + "-") for name in lab.namespaces)
        with pytest.raises(LabError, match="bad role"):
            first.add_host("backend1", ipv4="198.18.0.3")
        not_host_addresses: tuple[dict[str, Any], ...] = (
            {"ipv4": "10.0.0.1"},
            {"ipv4": "198.18.1.1"},
            {"ipv4": "198.18.0.4", "ipv6": "2001:db8:1::4"},
        )
        for bad in not_host_addresses:
            with pytest.raises(LabError, match="not a host address"):
                first.add_host("h", **bad)


def test_destroy_removes_everything_it_made_also_when_the_body_raises() -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with Lab() as lab:
            host = lab.add_host("b1", ipv4="198.18.0.11")
            backend = host.start_http_backend("b1", 80)
            made = lab.namespaces
            record = lab.record_path
            assert set(made) <= netns_names() and record.exists()
            raise RuntimeError("boom")
    assert not set(made) & netns_names()
    assert not record.exists()
    assert not alive(backend.process.pid)
    with IPRoute() as ipr:
        assert not [link for link in ipr.link("dump") if link.get("ifname", "").startswith(lab.run_id)]
    lab.destroy()  # idempotent


_CHILD = """
import json, os, signal, sys
from pathlib import Path
from balancer.lab.netns import Lab
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even if started in the background
lab = Lab(registry_dir=Path(sys.argv[1])).create()
backend = lab.add_host("b1", ipv4="198.18.0.11").start_http_backend("b1", 80)
print(json.dumps({"namespaces": lab.namespaces, "backend": backend.process.pid, "record": str(lab.record_path)}),
      flush=True)
if sys.argv[2] == "die":
    os.kill(os.getpid(), signal.SIGKILL)
sys.stdin.read()
"""


class _ChildLab(TypedDict):
    """What the child prints of its lab."""

    namespaces: list[str]
    backend: int  # its HTTP backend's pid
    record: str


def _child_lab(registry_dir: Path, mode: str) -> tuple[subprocess.Popen[str], _ChildLab]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(registry_dir), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, "the child lab did not start"
    return proc, json.loads(line)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_destroys_the_lab(tmp_path: Path, signum: int) -> None:
    proc, made = _child_lab(tmp_path, "wait")
    assert set(made["namespaces"]) <= netns_names()
    proc.send_signal(signum)
    proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert not set(made["namespaces"]) & netns_names()
    assert not Path(str(made["record"])).exists()
    assert not alive(int(made["backend"]))


def test_cleanup_leftovers_removes_dead_runs_and_leaves_live_ones(tmp_path: Path) -> None:
    proc, dead = _child_lab(tmp_path, "die")
    proc.communicate(timeout=30)
    assert set(dead["namespaces"]) <= netns_names(), "a killed owner leaves its namespaces behind"
    assert alive(int(dead["backend"]))
    with Lab(registry_dir=tmp_path) as live:
        live.add_host("b1", ipv4="198.18.0.11")
        # A dead run whose record names somebody else's namespace: that name must survive.
        forged = tmp_path / "xl000000.json"
        forged.write_text(json.dumps({"run_id": "xl000000", "pid": proc.pid, "namespaces": [live.switch_netns]}))
        removed = registry.cleanup_leftovers(tmp_path)
        assert sorted(removed) == sorted(dead["namespaces"])
        assert not set(dead["namespaces"]) & netns_names()
        assert not Path(str(dead["record"])).exists() and not forged.exists()
        assert set(live.namespaces) <= netns_names() and live.record_path.exists()
        assert registry.cleanup_leftovers(tmp_path) == []
    for _ in range(100):
        if not alive(int(dead["backend"])):
            break
        threading.Event().wait(0.05)
    assert not alive(int(dead["backend"])), "the orphaned backend in a dead run's namespace is stopped"


async def test_forward_localhost_exposes_a_namespace_port(lab: Lab) -> None:
    host = lab.add_host("lb", ipv4="198.18.0.5")  # the lab's sync calls also work from a coroutine
    # A silent listener on the same port of our own loopback: a forwarder connecting from here would hang on it.
    decoy = socket.create_server(("127.0.0.1", 0))
    inner_port = decoy.getsockname()[1]
    host.start_http_backend("lb", inner_port, bind="127.0.0.1")
    server = await forward.forward_localhost(0, host, inner_port)
    port = server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/") as response:
                assert (response.headers["X-Backend"], await response.text()) == ("lb", "lb\n")
            async with session.get(f"http://127.0.0.1:{port}/stream", params={"seconds": "0.3"}) as response:
                assert await response.text() == "lb 0\nlb 1\nlb 2\n"
    finally:
        decoy.close()
        server.close()
        await server.wait_closed()


def test_a_backend_that_cannot_start_says_why(lab: Lab) -> None:
    host = lab.add_host("b1", ipv4="198.18.0.11")
    host.start_http_backend("b1", 80)
    with pytest.raises(http_backend.BackendError, match="exited 1: .*address already in use"):
        host.start_http_backend("again", 80)


def test_the_suite_starts_by_removing_dead_runs_leftovers() -> None:
    """The session-start hook in ``tests/conftest.py`` runs the cleanup on the real registry."""
    import tests.conftest

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record = registry.REGISTRY_DIR / "xl0dead0.json"
    registry.REGISTRY_DIR.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"run_id": "xl0dead0", "pid": int(dead.stdout), "namespaces": []}))
    try:
        tests.conftest.pytest_sessionstart(None)  # type: ignore[arg-type]
        assert not record.exists()
    finally:
        record.unlink(missing_ok=True)
