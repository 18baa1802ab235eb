"""A network-namespace lab for layer-2 Direct Server Return: one switch, one namespace per host.

The *switch* namespace holds a Linux bridge. Each host gets its own namespace with one veth whose other end is a
port of that bridge, so every host shares one layer-2 segment (198.18.0.0/24, 2001:db8::/64), as a balancer
node and its backends would on a rack switch. Everything is named after a per-run id (``xl`` + 6 hex digits)::

    with Lab() as lab:
        client = lab.add_host("client", ipv4="198.18.0.2")
        b1 = lab.add_host("b1", ipv4="198.18.0.11")
        b1.add_vip_on_loopback("192.0.2.10")            # DSR backend: VIP on lo, ARP quiet about it
        with b1.start_http_backend("b1", 80):
            client.add_route("192.0.2.10/32", via=b1.ipv4)
            client.run(["python3", "-c", "..."])         # runs inside the client namespace

More segments (``add_segment()``: another bridge, 198.18.N.0/24 and 2001:db8:N::/64) let a host have interfaces
on several of them (``Host.add_interface()``), as a balancer with backends behind two NICs. For native-mode XDP
out of a host's veths, ``Host.pass_on_peers()`` puts an XDP_PASS program on their bridge ports (field notes).

Nothing is ever created in the caller's namespace: the veths are made in the switch namespace with their peer
placed straight into the host namespace, so removing the namespaces removes every interface.
``destroy()`` runs on leaving the ``with`` block (also on an exception), at exit, and on SIGTERM (which is turned
into ``SystemExit``); SIGINT unwinds as ``KeyboardInterrupt``. Each run records its owner pid and its names in
``/run/xdplb-lab/<run-id>.json``; ``registry.cleanup_leftovers()`` removes what dead runs left, and nothing
else.

``forward.forward_localhost()`` exposes a TCP port of a lab host on the caller's 127.0.0.1 (for a browser).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import ipaddress
import itertools
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Iterator, Sequence, TypeVar

from pyroute2 import IPRoute, netns
from pyroute2.ethtool import Ethtool

import config
from balancer.lab import http_backend, registry, sigterm, xdp

__all__ = [
    "LAB_V4",
    "LAB_V6",
    "VIP_V4",
    "VIP_V6",
    "Host",
    "HostInterface",
    "Lab",
    "LabError",
    "segment_subnets",
]

log = logging.getLogger(__name__)

LAB_V4 = ipaddress.IPv4Network("198.18.0.0/24")
LAB_V6 = ipaddress.IPv6Network("2001:db8::/64")
VIP_V4 = ipaddress.IPv4Network("192.0.2.0/24")
VIP_V6 = ipaddress.IPv6Network("2001:db8:100::/64")
_ROLE = re.compile(r"^[a-z][a-z0-9]{0,5}$")  # the host's ifname is "<run-id>-<role>", at most 15 characters
_IFNAMSIZ = 15
_MAX_SEGMENT = 15  # 198.18.N.0/24 and 2001:db8:N::/64, far from the VIPs' 2001:db8:100::/64
_T = TypeVar("_T")


class LabError(config.XdplbError, RuntimeError):
    """The lab could not be built, used or torn down."""


@contextlib.contextmanager
def _joined(name: str) -> Iterator[None]:
    """Move the current thread (only) into namespace ``name``, and back on leaving."""
    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        netns.setns(name, flags=0)  # flags=0: never create a namespace by accident
        try:
            yield
        finally:
            netns.setns(saved, flags=0)
    finally:
        os.close(saved)


def _ipr(name: str) -> Any:
    return IPRoute(netns=name, flags=0)


def _blocking(func: Callable[[], _T]) -> _T:
    """Call ``func``; in a thread of its own when this thread runs an event loop, which pyroute2's sync API
    refuses (the lab is also used from coroutines: the demo, async tests)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return func()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(func).result()


def _netlink(name: str, func: Callable[[Any], _T]) -> _T:
    """Call ``func(ipr)`` with a pyroute2 ``IPRoute`` bound to namespace ``name``."""

    def call() -> _T:
        with _ipr(name) as ipr:
            return func(ipr)

    return _blocking(call)


def _link_index(ipr: Any, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise LabError(f"no interface {ifname}")
    return int(found[0])


def _in_subnet(address: str, net: config.Prefix, what: str) -> str:
    try:
        addr = ipaddress.ip_address(address)
    except ValueError as exc:
        raise LabError(f"{what} {address!r}: {exc}") from None
    if addr not in net or addr in (net.network_address, net.broadcast_address):
        raise LabError(f"{what} {address} is not a host address of {net}")
    return str(addr)


def _sysctl_path(name: str) -> Path:
    # Only net.* sysctls are per namespace; anything else would change the whole machine.
    if not re.fullmatch(r"net(\.[\w-]+)+", name):
        raise LabError(f"refusing sysctl {name}: only net.* sysctls live in a network namespace")
    return Path("/proc/sys", *name.split("."))


def segment_subnets(segment: int) -> tuple[ipaddress.IPv4Network, ipaddress.IPv6Network]:
    """The subnets of segment ``segment``: 0 is ``LAB_V4``/``LAB_V6``, N is 198.18.N.0/24 and 2001:db8:N::/64."""
    if not 0 <= segment <= _MAX_SEGMENT:
        raise LabError(f"segment {segment} out of range 0..{_MAX_SEGMENT}")
    if segment == 0:
        return LAB_V4, LAB_V6
    return ipaddress.IPv4Network(f"198.18.{segment}.0/24"), ipaddress.IPv6Network(f"2001:db8:{segment:x}::/64")


class HostInterface:
    """One veth of a host: its name, ifindex and MAC in the host's namespace, its bridge port, its segment."""

    def __init__(
        self, *, ifname: str, ifindex: int, mac: str, port: str, segment: int, ipv4: str, ipv6: str | None
    ) -> None:
        self.ifname = ifname
        self.ifindex = ifindex
        self.mac = mac
        self.port = port
        self.segment = segment
        self.ipv4 = ipv4
        self.ipv6 = ipv6

    def __repr__(self) -> str:
        return f"HostInterface({self.ifname!r}, ifindex={self.ifindex}, segment={self.segment}, ipv4={self.ipv4!r})"


def _configure(ipr: Any, ifname: str, ipv4: str, ipv6: str | None) -> tuple[int, str]:
    """In a host namespace: ``lo`` and the veth up, the addresses on it; returns its ifindex and MAC."""
    ipr.link("set", index=_link_index(ipr, "lo"), state="up")
    index = _link_index(ipr, ifname)
    ipr.link("set", index=index, state="up")
    ipr.addr("add", index=index, address=ipv4, prefixlen=LAB_V4.prefixlen)
    if ipv6 is not None:
        ipr.addr("add", index=index, address=ipv6, prefixlen=LAB_V6.prefixlen)
    return index, str(ipr.link("get", index=index)[0].get("address"))


class Host:
    """One lab host: a namespace with ``lo`` and one veth (``ifname``) plugged into the lab's bridge.

    ``port`` is the veth's other end, a bridge port in the switch namespace (``Lab.switch_entered()``): native
    XDP_TX out of ``ifname`` needs an XDP program (XDP_PASS is enough) on ``port`` (field notes).
    """

    def __init__(
        self,
        lab: Lab,
        *,
        name: str,
        netns: str,
        ifname: str,
        ifindex: int,
        mac: str,
        ipv4: str,
        ipv6: str | None,
        port: str,
    ) -> None:
        self._lab = lab
        self.name = name
        self.netns = netns
        self.ifname = ifname
        self.port = port
        self.ifindex = ifindex
        self.mac = mac
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self.interfaces = [
            HostInterface(ifname=ifname, ifindex=ifindex, mac=mac, port=port, segment=0, ipv4=ipv4, ipv6=ipv6)
        ]

    def add_interface(
        self, segment: int, *, ipv4: str, ipv6: str | None = None, mac: str | None = None
    ) -> HostInterface:
        """Plug another veth of this host into segment ``segment`` (``Lab.add_segment()``), with addresses of
        that segment's subnets; returns it (also in ``interfaces``)."""
        return self._lab._add_interface(self, segment, ipv4=ipv4, ipv6=ipv6, mac=mac)

    def pass_on_peers(self) -> None:
        """Put an XDP_PASS program on the bridge port of each of this host's veths, so native XDP_TX and
        XDP_REDIRECT out of them deliver (without it native XDP on veth drops what it sends)."""
        ports = [interface.port for interface in self.interfaces]

        def attach(ipr: Any) -> None:
            for port in ports:
                xdp.attach_pass(ipr, _link_index(ipr, port))

        _netlink(self._lab.switch_netns, attach)
        log.info("event=lab_xdp_pass host=%s ports=%s", self.netns, ",".join(ports))

    def __repr__(self) -> str:
        return f"Host({self.name!r}, netns={self.netns!r}, ipv4={self.ipv4!r}, ipv6={self.ipv6!r}, mac={self.mac!r})"

    @contextlib.contextmanager
    def entered(self) -> Iterator[Host]:
        """Run the body with the current thread in this host's namespace (sockets, bcc, ``IPRoute()``).

        Only the network namespace changes; /sys and /sys/fs/bpf stay as they are (unlike ``ip netns exec``).
        Other threads are not affected. In a coroutine keep the body free of ``await``: every task of the loop
        runs in this thread.
        """
        with _joined(self.netns):
            yield self

    def ipr(self) -> Any:
        """Return a pyroute2 ``IPRoute`` bound to this namespace; close it (``with``) when done.

        pyroute2's sync API refuses a thread running an event loop: there, use ``AsyncIPRoute`` in ``entered()``.
        """
        return _ipr(self.netns)

    def add_route(self, prefix: str, via: str | None = None) -> None:
        """Route ``prefix`` via the neighbour ``via``, or on-link through the veth when ``via`` is None."""
        dst = ipaddress.ip_network(prefix)
        spec: dict[str, Any] = {"dst": str(dst.network_address), "dst_len": dst.prefixlen}
        if via is None:
            spec["oif"] = self.ifindex
        else:
            if ipaddress.ip_address(via).version != dst.version:
                raise LabError(f"route {prefix} via {via}: address families differ")
            spec["gateway"] = via
        _netlink(self.netns, lambda ipr: ipr.route("replace", **spec))

    def add_vip_on_loopback(self, vip: str) -> None:
        """Make this host a DSR backend for ``vip``: the VIP on ``lo``, and no ARP answers or filters about it.

        ``arp_ignore=1`` answers ARP only for addresses of the receiving interface, ``arp_announce=2`` never uses
        the VIP as ARP source, ``rp_filter=0`` accepts packets whatever the reverse path. IPv6 needs none of this:
        neighbour discovery only answers for addresses of the receiving interface.
        """
        addr = ipaddress.ip_address(vip)
        net = VIP_V4 if addr.version == 4 else VIP_V6
        _in_subnet(vip, net, "VIP")
        if addr.version == 4:
            for conf in ("all", self.ifname):
                self.set_sysctl(f"net.ipv4.conf.{conf}.arp_ignore", 1)
                self.set_sysctl(f"net.ipv4.conf.{conf}.arp_announce", 2)
            for conf in ("all", "default", "lo", self.ifname):
                self.set_sysctl(f"net.ipv4.conf.{conf}.rp_filter", 0)
        _netlink(
            self.netns,
            lambda ipr: ipr.addr(
                "replace", index=_link_index(ipr, "lo"), address=str(addr), prefixlen=addr.max_prefixlen
            ),
        )

    def remove_vip_from_loopback(self, vip: str) -> None:
        """Take ``vip`` off ``lo`` (the classic DSR misconfiguration: the backend answers, but not as the VIP)."""
        addr = ipaddress.ip_address(vip)
        _netlink(
            self.netns,
            lambda ipr: ipr.addr("del", index=_link_index(ipr, "lo"), address=str(addr), prefixlen=addr.max_prefixlen),
        )
        log.info("event=lab_vip_on_loopback host=%s vip=%s", self.netns, addr)

    def set_sysctl(self, name: str, value: int | str) -> None:
        """Set the ``net.*`` sysctl ``name`` inside this namespace only."""
        path = _sysctl_path(name)
        with self.entered():
            path.write_text(f"{value}\n")

    def get_sysctl(self, name: str) -> str:
        """Return the value of the ``net.*`` sysctl ``name`` inside this namespace."""
        path = _sysctl_path(name)
        with self.entered():
            return path.read_text().strip()

    def disable_tx_checksum_offload(self) -> None:
        """Turn off tx checksum offload on the veth: native XDP drops the partial checksums it would send."""

        def disable() -> None:
            with self.entered(), contextlib.closing(Ethtool()) as ethtool:
                features = ethtool.get_features(self.ifname)
                for key, feature in features.features.items():
                    if key.startswith("tx-checksum") and feature.enable:
                        feature.enable = False
                ethtool.set_features(self.ifname, features)

        _blocking(disable)

    def tx_checksum_offload(self) -> bool:
        """Return whether any tx checksum offload is still on for the veth."""

        def enabled() -> bool:
            with self.entered(), contextlib.closing(Ethtool()) as ethtool:
                features = ethtool.get_features(self.ifname).features
                return any(f.enable for key, f in features.items() if key.startswith("tx-checksum"))

        return _blocking(enabled)

    def _command(self, argv: Sequence[str]) -> list[str]:
        # nsenter joins the network namespace only; `ip netns exec` would also remount /sys and hide /sys/fs/bpf.
        return ["nsenter", f"--net={registry.NETNS_DIR / self.netns}", "--", *argv]

    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 60.0, **kwargs: Any
    ) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` in this namespace and wait for it (``subprocess.run`` arguments apply)."""
        return subprocess.run(self._command(argv), check=check, timeout=timeout, **kwargs)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in this namespace, in its own process group; the lab stops it on ``destroy()``."""
        proc = subprocess.Popen(self._command(argv), start_new_session=True, **kwargs)
        self._lab._processes.append(proc)
        return proc

    def start_http_backend(
        self, name: str, port: int = 80, *, bind: str | None = None, timeout: float = 15.0
    ) -> http_backend.HttpBackend:
        """Start ``python -m balancer.lab.http_backend`` here and return once it answers ``GET /healthz``."""
        argv = [sys.executable, "-m", "balancer.lab.http_backend", "--name", name, "--port", str(port)]
        if bind is not None:
            argv += ["--bind", bind]
        stderr = tempfile.TemporaryFile()  # a file, not a pipe nobody reads: errors must never block the server
        proc = self.popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
        backend = http_backend.HttpBackend(
            self, name=name, port=port, address=bind or self.ipv4, process=proc, stderr=stderr
        )
        try:
            backend.wait_ready(timeout)
        except BaseException:
            backend.stop()
            raise
        return backend


class _SigtermToExit:
    """Turns SIGTERM into ``SystemExit`` while a lab of this process is alive, so teardown code runs."""

    def __init__(self) -> None:
        self.labs: set[int] = set()
        self._handler: sigterm.Handler | None = None

    def acquire(self, lab: int) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers
        if not self.labs:
            if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
                return  # somebody else owns SIGTERM; they must unwind to destroy()
            # SystemExit unwinds through `with Lab()` and atexit, both call destroy(); with no lab left, or in a
            # forked child, SIGTERM kills the default way.
            self._handler = sigterm.raising_handler(
                lambda signum: SystemExit(128 + signum), armed=lambda: bool(self.labs)
            )
            signal.signal(signal.SIGTERM, self._handler)
        self.labs.add(lab)

    def release(self, lab: int) -> None:
        self.labs.discard(lab)
        if not self.labs and threading.current_thread() is threading.main_thread():
            if self._handler is not None and signal.getsignal(signal.SIGTERM) == self._handler:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)


_SIGTERM = _SigtermToExit()


class Lab:
    """The switch namespace with its bridge, and the hosts plugged into it; see the module docstring."""

    def __init__(self, *, registry_dir: Path = registry.REGISTRY_DIR, handle_signals: bool = True) -> None:
        self.registry_dir = registry_dir
        self.run_id = ""
        self.hosts: dict[str, Host] = {}
        self._handle_signals = handle_signals
        self._namespaces: list[str] = []
        self._processes: list[subprocess.Popen[Any]] = []
        self._created = False
        self._owner = os.getpid()
        self._port_numbers = itertools.count()
        self._segments = 1

    @property
    def switch_netns(self) -> str:
        """Name of the namespace holding the bridge."""
        return f"{self.run_id}-sw"

    @property
    def bridge(self) -> str:
        """Name of the bridge inside the switch namespace."""
        return f"{self.run_id}-br"

    @contextlib.contextmanager
    def switch_entered(self) -> Iterator[None]:
        """Like ``Host.entered()``, for the switch namespace (the bridge and every host's ``port``)."""
        with _joined(self.switch_netns):
            yield

    @property
    def namespaces(self) -> list[str]:
        """Every namespace this run made (or was about to make), switch first."""
        return list(self._namespaces)

    @property
    def record_path(self) -> Path:
        """The registry record of this run."""
        return self.registry_dir / f"{self.run_id}.json"

    def __enter__(self) -> Lab:
        self.create()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.destroy()

    def create(self) -> Lab:
        """Make the switch namespace and its bridge; on failure undo what was done and raise."""
        if self._created:
            raise LabError(f"lab {self.run_id} already created")
        self._created = True
        self._owner = os.getpid()
        self.registry_dir.mkdir(parents=True, exist_ok=True)
        while not self.run_id or self.record_path.exists() or (registry.NETNS_DIR / self.switch_netns).exists():
            self.run_id = "xl" + secrets.token_hex(3)
        atexit.register(self.destroy)
        if self._handle_signals:
            _SIGTERM.acquire(id(self))
        try:
            self._new_netns(self.switch_netns)
            _netlink(self.switch_netns, lambda ipr: self._add_bridge(ipr, self.bridge))
        except BaseException:
            self.destroy()
            raise
        log.info("event=lab_created run=%s switch=%s", self.run_id, self.switch_netns)
        return self

    def _add_bridge(self, ipr: Any, bridge: str) -> None:
        ipr.link("add", ifname=bridge, kind="bridge", br_stp_state=0, br_forward_delay=0)
        ipr.link("set", index=_link_index(ipr, bridge), state="up")

    def bridge_of(self, segment: int) -> str:
        """Name of segment ``segment``'s bridge in the switch namespace."""
        return self.bridge if segment == 0 else f"{self.run_id}-b{segment}"

    def add_segment(self) -> int:
        """Add another layer-2 segment (a bridge); returns its number, for ``add_host`` and ``add_interface``."""
        if not self._created:
            raise LabError("call Lab.create() (or enter the Lab) before add_segment()")
        segment = self._segments
        segment_subnets(segment)
        _netlink(self.switch_netns, lambda ipr: self._add_bridge(ipr, self.bridge_of(segment)))
        self._segments += 1
        log.info(
            "event=lab_segment_added run=%s segment=%d subnets=%s,%s", self.run_id, segment, *segment_subnets(segment)
        )
        return segment

    def _segment(self, segment: int) -> tuple[ipaddress.IPv4Network, ipaddress.IPv6Network]:
        if not 0 <= segment < self._segments:
            raise LabError(f"lab {self.run_id} has no segment {segment}: add_segment() first")
        return segment_subnets(segment)

    def add_host(
        self, role: str, *, ipv4: str, ipv6: str | None = None, mac: str | None = None, segment: int = 0
    ) -> Host:
        """Add host ``role`` (1-6 of ``[a-z0-9]``, a letter first) with one veth into segment ``segment``'s bridge.

        ``ipv4`` must lie in the segment's IPv4 subnet (198.18.0.0/24 for segment 0) and ``ipv6`` in its IPv6 one
        (2001:db8::/64), both given without prefix length.
        """
        if not self._created or not self.run_id:
            raise LabError("call Lab.create() (or enter the Lab) before add_host()")
        if not _ROLE.match(role):
            raise LabError(f"bad role {role!r}: 1-6 characters of [a-z0-9], starting with a letter")
        if role in self.hosts:
            raise LabError(f"lab {self.run_id} already has a host {role}")
        net4, net6 = self._segment(segment)
        ipv4 = _in_subnet(ipv4, net4, "host address")
        ipv6 = None if ipv6 is None else _in_subnet(ipv6, net6, "host address")
        name = ifname = f"{self.run_id}-{role}"  # the namespace and the veth inside it
        port = f"{self.run_id}-p{next(self._port_numbers)}"
        assert len(ifname) <= _IFNAMSIZ and len(port) <= _IFNAMSIZ
        self._new_netns(name)
        # Before the veth exists, so its IPv6 addresses (link-local too) are usable at once.
        with _joined(name):
            Path("/proc/sys/net/ipv6/conf/default/accept_dad").write_text("0\n")
        _netlink(self.switch_netns, lambda ipr: self._plug(ipr, port, name, ifname, mac, segment))
        index, actual_mac = _netlink(name, lambda ipr: _configure(ipr, ifname, ipv4, ipv6))
        host = Host(
            self, name=role, netns=name, ifname=ifname, ifindex=index, mac=actual_mac, ipv4=ipv4, ipv6=ipv6, port=port
        )
        host.interfaces[0].segment = segment
        self.hosts[role] = host
        log.info(
            "event=lab_host_added run=%s host=%s ipv4=%s ipv6=%s mac=%s", self.run_id, name, ipv4, ipv6, actual_mac
        )
        return host

    def _add_interface(
        self, host: Host, segment: int, *, ipv4: str, ipv6: str | None, mac: str | None
    ) -> HostInterface:
        net4, net6 = self._segment(segment)
        ipv4 = _in_subnet(ipv4, net4, "host address")
        ipv6 = None if ipv6 is None else _in_subnet(ipv6, net6, "host address")
        ifname = f"{self.run_id}-{len(host.interfaces)}"  # in the host's own namespace: no clash possible
        port = f"{self.run_id}-p{next(self._port_numbers)}"
        _netlink(self.switch_netns, lambda ipr: self._plug(ipr, port, host.netns, ifname, mac, segment))
        index, actual_mac = _netlink(host.netns, lambda ipr: _configure(ipr, ifname, ipv4, ipv6))
        interface = HostInterface(
            ifname=ifname, ifindex=index, mac=actual_mac, port=port, segment=segment, ipv4=ipv4, ipv6=ipv6
        )
        host.interfaces.append(interface)
        log.info(
            "event=lab_interface_added run=%s host=%s interface=%s segment=%d ipv4=%s",
            self.run_id,
            host.netns,
            ifname,
            segment,
            ipv4,
        )
        return interface

    def replug(self, role: str, *, down: float = 0.0) -> int:
        """Delete host ``role``'s veth (both ends) and make it again, same names, MAC and addresses: a NIC that
        goes away and comes back (driver reload). ``down``: seconds without it. Returns the new ifindex."""
        host = self.hosts[role]
        _netlink(self.switch_netns, lambda ipr: ipr.link("del", index=_link_index(ipr, host.port)))
        if down > 0:
            time.sleep(down)
        segment = host.interfaces[0].segment
        _netlink(self.switch_netns, lambda ipr: self._plug(ipr, host.port, host.netns, host.ifname, host.mac, segment))
        index, _ = _netlink(host.netns, lambda ipr: _configure(ipr, host.ifname, host.ipv4, host.ipv6))
        host.ifindex = host.interfaces[0].ifindex = index
        log.info("event=lab_host_replugged run=%s host=%s ifindex=%d", self.run_id, host.netns, index)
        return index

    def _plug(self, ipr: Any, port: str, netns: str, ifname: str, mac: str | None, segment: int = 0) -> None:
        """In the switch namespace: a veth ``port`` into segment ``segment``'s bridge, its peer ``ifname`` in
        ``netns``."""
        peer: dict[str, Any] = {"ifname": ifname, "net_ns_fd": netns}
        if mac is not None:
            peer["address"] = mac
        ipr.link("add", ifname=port, kind="veth", peer=peer)
        ipr.link("set", index=_link_index(ipr, port), master=_link_index(ipr, self.bridge_of(segment)), state="up")

    def destroy(self) -> None:
        """Stop the lab's processes and remove every namespace it made; idempotent, safe after a partial create."""
        if not self._created or os.getpid() != self._owner:
            return  # pyroute2 forks helper children: they inherit atexit and signal handlers, never the lab
        errors: list[str] = []
        left: list[str] = []
        for proc in self._processes:
            try:
                http_backend.stop_process(proc, timeout=3.0)
            except Exception as exc:  # keep tearing down; reported below
                errors.append(f"stop pid {proc.pid}: {exc!r}")
        self._processes.clear()
        # Host namespaces first, the switch last: with the switch gone every veth is gone even if some process
        # outside our control still holds a host namespace open.
        for name in reversed(self._namespaces):
            try:
                killed = registry.kill_netns_processes(name)
                if killed:
                    log.warning("event=lab_killed_processes netns=%s pids=%s", name, killed)
                registry.remove_netns(name)
            except Exception as exc:
                errors.append(f"remove netns {name}: {exc!r}")
                left.append(name)
        self._namespaces[:] = left
        self.hosts.clear()
        if left:
            self._write_record()  # what is left stays known to cleanup_leftovers() once this process is gone
        else:
            with contextlib.suppress(FileNotFoundError):
                self.record_path.unlink()
        _SIGTERM.release(id(self))
        atexit.unregister(self.destroy)
        self._created = False
        if errors:
            raise LabError(f"lab {self.run_id} teardown: " + "; ".join(errors))
        log.info("event=lab_destroyed run=%s", self.run_id)

    def _new_netns(self, name: str) -> None:
        if (registry.NETNS_DIR / name).exists():
            raise LabError(f"namespace {name} exists already and is not ours")
        # Recorded before it exists: a crash between the two leaves a name cleanup_leftovers() knows about.
        self._namespaces.append(name)
        self._write_record()
        netns.create(name)

    def _write_record(self) -> None:
        record = {
            "run_id": self.run_id,
            "pid": os.getpid(),
            "start_time": registry.start_time(os.getpid()),
            "namespaces": self._namespaces,
        }
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        tmp.replace(self.record_path)
