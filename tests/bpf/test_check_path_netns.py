"""Checks through the data path, in a lab: the real checkers, marked, leave the balancer by ``check_path.c``'s tc
program and reach a backend as the VIP's traffic would (its own MAC, or IPIP/GUE taken off by ``xdplb decap``).

The backends' servers listen on the VIP alone, so only a check that arrives addressed to the VIP gets an answer: a
direct check to the same backend is refused. Take the VIP off the backend's loopback and the check fails, saying
what is most likely wrong.
"""

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import astuple, dataclass
from ipaddress import ip_address
from typing import TypeVar

import pytest

import bpf
import config
import healthchecks
from balancer.lab.netns import Host, Lab
from bpf import check_path, decap
from tests.bpf.conftest import require_bpf
from tests.healthchecks.hc_servers import DnsResponder

pytestmark = pytest.mark.privileged

VIP4, VIP6 = "192.0.2.100", "2001:db8:100::100"
PORT, DNS_PORT = 8080, 5353
T = TypeVar("T")


@dataclass
class World:
    lb: Host
    real: Host
    paths: check_path.CheckPaths
    dns: "_DnsServer"


class _DnsServer:
    """Answers DNS over UDP and TCP on the VIPs only, from a thread (``DnsResponder`` says what)."""

    def __init__(self, host: Host) -> None:
        self.responder = DnsResponder()
        self.sockets: list[socket.socket] = []
        with host.entered():
            for family, vip in ((socket.AF_INET, VIP4), (socket.AF_INET6, VIP6)):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    sock = socket.socket(family, kind)
                    sock.bind((vip, DNS_PORT))
                    if kind == socket.SOCK_STREAM:
                        sock.listen(8)
                    self.sockets.append(sock)
                    threading.Thread(target=self._serve, args=(sock, kind), daemon=True).start()

    def _serve(self, sock: socket.socket, kind: int) -> None:
        while True:
            try:
                if kind == socket.SOCK_DGRAM:
                    query, peer = sock.recvfrom(4096)
                    reply = self.responder.answer(query)
                    if reply is not None:
                        sock.sendto(reply, peer)
                    continue
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    size = int.from_bytes(conn.recv(2), "big")
                    reply = self.responder.answer(conn.recv(size))
                    if reply is not None:
                        conn.sendall(len(reply).to_bytes(2, "big") + reply)
                except OSError:
                    pass

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def _in(host: Host, work: Callable[[], T]) -> T:
    """``work()`` in a thread of its own inside ``host``'s namespace (where a checker's sockets must be made)."""
    result: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with host.entered():
                result.append(work())
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    if errors:
        raise errors[0]
    return result[0]


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    """One lab for the module: the tests leave it as they found it."""
    require_bpf()
    with Lab() as lab:
        lb = lab.add_host("lb", ipv4="198.18.0.1", ipv6="2001:db8::1")
        real = lab.add_host("real", ipv4="198.18.0.20", ipv6="2001:db8::20")
        for vip in (VIP4, VIP6):
            real.add_vip_on_loopback(vip)
        servers = [real.start_http_backend("real", PORT, bind=vip) for vip in (VIP4, VIP6)]
        dns = _DnsServer(real)
        with real.entered():
            decap.attach(real.ifname, mode="generic")
        with lb.entered():
            paths = check_path.load()
            paths.attach(lb.ifname)
        try:
            yield World(lb, real, paths, dns)
        finally:
            dns.close()
            for server in servers:
                server.stop()
            with lb.entered():  # libbpf's netlink works in the calling thread's namespace
                paths.cleanup()


def _probe(
    world: World,
    check: config.Check,
    backend: str,
    via: healthchecks.ViaDataPlane | None,
    engine: healthchecks.HttpEngine = "lean",
) -> healthchecks.CheckResult:
    return _in(
        world.lb, lambda: asyncio.run(healthchecks.probe(check, ip_address(backend), PORT, http_engine=engine, via=via))
    )


def _path(world: World, path_id: int, vip: str, backend: str, tunnel: bpf.Tunnel | None) -> healthchecks.ViaDataPlane:
    source = {4: world.lb.ipv4, 6: world.lb.ipv6}[ip_address(backend).version]
    assert source is not None, "the lb has an address of each family"
    world.paths.put(
        path_id,
        check_path.CheckPath(ip_address(vip), ip_address(backend), tunnel, ip_address(source) if tunnel else None),
    )
    return healthchecks.ViaDataPlane(check_path.mark_of(path_id), ip_address(vip))


def _since(before: check_path.CheckPathCounters, after: check_path.CheckPathCounters) -> check_path.CheckPathCounters:
    return check_path.CheckPathCounters(*(a - b for a, b in zip(astuple(after), astuple(before), strict=True)))


FAST = config.CheckTiming(interval=2, timeout=1)
HTTP = config.HttpCheck(path="/healthz", via="dataplane", timing=FAST)


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("tunnel", [None, "ipip", "gue"])
def test_a_check_reaches_the_backend_as_the_vip_by_its_forwarding(
    world: World, family: int, tunnel: bpf.Tunnel | None
) -> None:
    vip, backend = (VIP4, world.real.ipv4) if family == 4 else (VIP6, str(world.real.ipv6))
    via = _path(world, 7, vip, backend, tunnel)
    before = _in(world.real, lambda: decap.status(world.real.ifname).counters)
    sent_before = world.paths.counters()

    result = _probe(world, HTTP, backend, via)

    assert (result.ok, result.reason) == (True, "status 200"), result
    direct = _probe(world, HTTP.model_copy(update={"via": "direct"}), backend, None)
    assert (direct.ok, direct.reason) == (False, "connection refused")  # the server is on the VIP alone
    after = _in(world.real, lambda: decap.status(world.real.ifname).counters)
    counters = _since(sent_before, world.paths.counters())
    assert counters.sent > 0 and counters.replies > 0 and counters.unknown == counters.refused == 0
    assert counters.tunnelled == (counters.sent if tunnel else 0)
    taken_off = {"ipip": after.ipip - before.ipip, "gue": after.gue - before.gue}
    assert taken_off == {
        "ipip": counters.sent if tunnel == "ipip" else 0,
        "gue": counters.sent if tunnel == "gue" else 0,
    }


@pytest.mark.parametrize(
    "check, engine",
    [
        (config.HttpCheck(path="/healthz", via="dataplane", keepalive=True, timing=FAST), "lean"),
        (config.HttpCheck(path="/healthz", via="dataplane", timing=FAST), "aiohttp"),
        (config.TcpCheck(via="dataplane", timing=FAST), "lean"),
        (config.DnsCheck(port=DNS_PORT, via="dataplane", timing=FAST), "lean"),
        (config.DnsCheck(port=DNS_PORT, transport="tcp", via="dataplane", timing=FAST), "lean"),
    ],
    ids=["http-keepalive", "http-aiohttp", "tcp", "dns-udp", "dns-tcp"],
)
def test_every_checker_marks_its_sockets(world: World, check: config.Check, engine: healthchecks.HttpEngine) -> None:
    via = _path(world, 8, VIP4, world.real.ipv4, "gue")
    before = world.paths.counters()
    result = _probe(world, check, world.real.ipv4, via, engine)
    assert result.ok, result
    assert _since(before, world.paths.counters()).replies > 0


def test_a_backend_without_the_vip_fails_and_says_why(world: World) -> None:
    via = _path(world, 9, VIP4, world.real.ipv4, "ipip")
    assert _probe(world, HTTP, world.real.ipv4, via).ok
    world.real.remove_vip_from_loopback(VIP4)

    result = _probe(world, HTTP, world.real.ipv4, via)

    assert (result.ok, result.reason) == (
        False,
        "no answer on VIP 192.0.2.100:8080 through the data path (is the VIP on the backend's loopback?)",
    )
    dns = _probe(world, config.DnsCheck(port=DNS_PORT, via="dataplane", timing=FAST), world.real.ipv4, via)
    assert (
        dns.reason == f"no answer on VIP 192.0.2.100:{DNS_PORT} through the data path (is the VIP on the "
        "backend's loopback?)"
    )
    world.real.add_vip_on_loopback(VIP4)
    assert _probe(world, HTTP, world.real.ipv4, via).ok


def test_a_refusal_on_the_vip_is_named(world: World) -> None:
    via = _path(world, 10, VIP4, world.real.ipv4, None)
    result = _probe(world, HTTP.model_copy(update={"port": 9999}), world.real.ipv4, via)
    assert (result.ok, result.reason) == (False, "connection refused (on VIP 192.0.2.100:9999 through the data path)")


def test_a_marked_packet_without_its_path_never_leaves(world: World) -> None:
    """A check whose path is gone, or marked for another backend, is dropped: sent to the backend's own address it
    would pass without testing the VIP (here the backend's server on 0.0.0.0 would answer it)."""
    server = world.real.start_http_backend("any", 8081)
    before = world.paths.counters()
    try:
        open_check = HTTP.model_copy(update={"port": 8081})
        assert _probe(world, open_check.model_copy(update={"via": "direct"}), world.real.ipv4, None).ok
        stale = healthchecks.ViaDataPlane(check_path.mark_of(11), ip_address(VIP4))
        assert not _probe(world, open_check, world.real.ipv4, stale).ok
        other = _path(world, 12, VIP4, "198.18.0.30", None)  # the path of another backend
        assert not _probe(world, open_check, world.real.ipv4, other).ok
    finally:
        server.stop()
    counters = _since(before, world.paths.counters())
    assert counters.unknown > 0 and counters.refused > 0 and counters.sent == 0


def test_detach_leaves_the_interface_as_it_was(world: World) -> None:
    via = _path(world, 13, VIP4, world.real.ipv4, None)
    with world.lb.entered():
        world.paths.detach(world.lb.ifname)
    assert world.paths.attached == {}
    # Unmarked now: the check goes to the backend's own address, where nothing listens on 8080.
    assert _probe(world, HTTP, world.real.ipv4, via).reason.startswith("connection refused")
    with world.lb.entered():
        world.paths.attach(world.lb.ifname)
    assert _probe(world, HTTP, world.real.ipv4, via).ok


def test_the_daemon_finds_backends_whose_route_leaves_elsewhere(world: World) -> None:
    """A marked check whose route leaves by an interface without the programs goes to the backend's own address
    unchanged: the daemon names such backends (here, one with no route at all) in a warning."""
    from balancer import daemon

    cfg = config.parse_config(
        f"""
interfaces: [{world.lb.ifname}]
services:
  - vip: {VIP4}
    port: 80
    checks: [{{type: tcp, via: dataplane}}]
    backends: [{world.real.ipv4}, 203.0.113.9]
""",
        source="x",
    )
    found = _in(world.lb, lambda: daemon.check_routes_elsewhere(cfg, {world.lb.ifindex}))
    assert found == [("203.0.113.9", None)]
