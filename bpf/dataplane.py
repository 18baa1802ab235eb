"""The ``DataPlane``: load the XDP program with bcc, attach it, and program services into its maps.

A service update is atomic for the program: new backend slots and a new Maglev table (a map of its own) are
written first, then the service entry that points at them is replaced in one map update; the replaced table stays
readable for a grace period (``_tables``). Only then do removed backends' slots get a new generation, so flows
that pointed at them select again; freed slots are reused oldest first. An update that fails part way leaves the
service as it was: the previous table keeps serving, with the slots it points at.
"""

import ctypes
import fcntl
import ipaddress
import math
import logging
import mmap
import os
import socket
import struct
import threading
import time
import typing
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import config
from bpf import _abi, _compiler_pages, _flow_carry, _xdp_programs, check_path
from bpf._counters import Counters, GlobalCounters, read_counters, read_totals
from bpf._kernel_source import ensure_kernel_source
from bpf._tables import KernelMaps, MapOps, TableStore
from bpf.errors import DataPlaneError
from bpf.maglev import MaglevCache, TableKey, place
from bpf.service import PROTO_NUMBERS, Backend, BackendState, BackendStatus, Service, ServiceKey, ServiceStatus, Tunnel

__all__ = ["DEFAULT_GUE_PORT", "AttachMode", "DataPlane", "DataPlaneSettings", "EarlierProgram"]

log = logging.getLogger(__name__)
_FLOW_WAYS = _abi.header_defines()["FLOW_WAYS"]
_FLOW_ACTIVE_UNITS = _abi.header_defines()["FLOW_ACTIVE_UNITS"]
_ACTIVE_SAMPLE_SETS = 16384  # sets read to count active flows: all of a default table (65536 entries)
_SIOCGIFHWADDR = 0x8927
DEFAULT_GUE_PORT = 6080  # Katran's default for GUE
_TUNNEL_FLAGS = {"ipip": _abi.BACKEND_IPIP, "gue": _abi.BACKEND_GUE}

AttachMode = Literal["auto", "native", "generic"]
_PROG_NAME = "xdplb"  # the program's function name, which the kernel keeps as its name
# The maps an earlier run's counters are read from; their layouts must be ours for them to be carried over.
_INHERITED = (
    "global_stats",
    "service_stats",
    "backend_stats",
    "services_v4",
    "services_v6",
    "backends",
    "tunnel_dests",
    "flows_v4",
    "flows_v6",
)
_TUNNEL_MASK = _abi.BACKEND_IPIP | _abi.BACKEND_GUE
_XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
_XDP_FLAGS = {"generic": 1 << 1, "native": 1 << 2}


class EarlierProgram(typing.NamedTuple):
    """An xdplb program an earlier run left attached: its attach mode and the kernel's id of it."""

    mode: AttachMode
    prog_id: int


@dataclass(frozen=True)
class DataPlaneSettings:
    """Sizes fixed when the program is loaded (C ``#define``s of ``xdplb.h``)."""

    flow_table_size: int = 65536
    max_services: int = 4096
    max_backends: int = 16384
    new_flow_rate_limit: int = 125000
    hash_seed: int = 0
    max_ifindex: int = 4096
    answer_ping: bool = True  # answer ICMP/ICMPv6 echo requests to a VIP address in XDP

    @property
    def flow_sets(self) -> int:
        """Sets of the flow table: ``flow_table_size`` / 4 ways, rounded up to a power of two."""
        return 1 << max(0, math.ceil(self.flow_table_size / _FLOW_WAYS) - 1).bit_length()

    @property
    def max_tables(self) -> int:
        """Maglev table ids: a service's live table and the one it is replacing."""
        return 2 * self.max_services

    @property
    def flow_table_capacity(self) -> int:
        """Flow-table entries per IP version, after rounding ``flow_table_size`` up to whole sets."""
        return self.flow_sets * _FLOW_WAYS

    def cflags(self) -> list[str]:
        """Compiler flags that set these sizes."""
        return [
            f"-DFLOW_SETS={self.flow_sets}",
            f"-DMAX_SERVICES={self.max_services}",
            f"-DMAX_BACKENDS={self.max_backends}",
            f"-DMAX_TABLES={self.max_tables}",
            f"-DNEW_FLOW_RATE_LIMIT={self.new_flow_rate_limit}",
            f"-DHASH_SEED={self.hash_seed & 0xFFFFFFFF}U",
            f"-DMAX_IFINDEX={self.max_ifindex}",
            f"-DANSWER_PING={int(self.answer_ping)}",
        ]


@dataclass
class _ProgrammedService:
    spec: Service
    service_id: int
    slots: dict[config.IpAddress, int] = field(default_factory=dict)
    entries: dict[int, int] = field(default_factory=dict)  # backend slot -> its entries in the live table
    inputs: tuple[object, ...] | None = None  # what the live table and the service entry were built from
    table_id: int | None = None  # the live table (None: no backend takes new flows)
    status: ServiceStatus | None = None
    stale: bool = False  # an egress interface came or went since it was written: write it again


class DataPlane:
    """The XDP program and its maps. Lifecycle: ``setup()`` → ``attach()``/``set_service()`` → ``cleanup()``.

    All calls are synchronous map and netlink operations in the network namespace that ``setup()`` ran in;
    ``setup()`` compiles the program (seconds), so an asyncio caller runs it in a thread.
    """

    def __init__(
        self,
        settings: DataPlaneSettings | None = None,
        *,
        maglev: MaglevCache | None = None,
        table_ops: MapOps | None = None,
    ) -> None:
        self.settings = settings or DataPlaneSettings()
        self.maglev = maglev or MaglevCache()  # the reconciler fills it off the event loop before set_service
        self._bpf: Any = None
        self._fn: Any = None
        self._attached: dict[str, int] = {}  # ifname -> XDP flags used
        self._ifindexes: dict[str, int] = {}  # ifname -> its ifindex when attached
        self._egress: set[int] = set()  # ifindexes in tx_ports: backends on them are reached (XDP_TX or redirect)
        self._tunnel_sources: dict[int, config.IpAddress | None] = {}  # by IP version (set_tunnel)
        self._gue_port = DEFAULT_GUE_PORT
        self._check_paths: check_path.CheckPaths | None = None  # loaded by enable_check_paths
        self._check_routes: dict[int, tuple[config.IpAddress, config.IpAddress, Tunnel | None]] = {}
        self._services: dict[ServiceKey, _ProgrammedService] = {}
        # Service updates may run in a worker thread (a Maglev table's install waits for an RCU grace period in the
        # kernel, ~8 ms): they hold this lock, and so do the readers of the service state on the event loop.
        self._lock = threading.RLock()
        # Counter rows by service and by (service, backend), kept until a service changes: hashing 10,000
        # (ServiceKey, address) keys anew for every status and scrape cost more than reading the counters.
        self._counter_rows: tuple[dict[ServiceKey, int], dict[tuple[ServiceKey, config.IpAddress], int]] | None = None
        self._free_ids = deque(range(self.settings.max_services))
        self._free_slots = deque(range(1, self.settings.max_backends))  # slot 0 is never used
        self._generations: dict[int, int] = {}
        self._table_ops = table_ops
        self._tables: TableStore | None = None
        self._flow_seed = 0
        self._flow_views: dict[int, mmap.mmap] = {}

    # lifecycle

    def setup(self) -> None:
        """Compile and load the program (needs root and kernel headers)."""
        if self._bpf is not None:
            return
        from bcc import BPF  # imported late: bcc is only on Debian's python, and only needed here

        ensure_kernel_source()
        flow_seed = self._flow_seed = int.from_bytes(os.urandom(4), "little")
        cflags = [f"-I{_abi.HEADER.parent}", "-w", *self.settings.cflags(), f"-DFLOW_SEED={flow_seed}U"]
        log.info("event=dataplane_compiling program=%s note=takes_a_few_seconds", _abi.PROGRAM)
        started = time.monotonic()
        try:
            self._bpf = BPF(src_file=str(_abi.PROGRAM).encode(), cflags=cflags)
            self._fn = self._bpf.load_func(b"xdplb", BPF.XDP)
        except Exception as error:
            raise DataPlaneError(f"loading the XDP program failed: {error}") from error
        self._bpf[b"abi"][ctypes.c_int(0)] = ctypes.c_uint32(_abi.ABI)
        ops = self._table_ops or KernelMaps(self._bpf[b"maglev_tables"])
        self._tables = TableStore(ops, self.settings.max_tables)
        _return_free_heap()
        log.info(
            "event=dataplane_loaded seconds=%.1f flow_table_entries=%d prog_fd=%d",
            time.monotonic() - started, self.settings.flow_table_capacity, self.prog_fd,
        )  # fmt: skip

    def cleanup(self, *, detach: bool = True) -> None:
        """Detach from every interface and release the program; safe after a partial setup, and twice. With
        ``detach`` False the program stays attached and keeps forwarding with its maps (a restart stop)."""
        if self._check_paths is not None:
            paths, self._check_paths = self._check_paths, None
            try:
                paths.cleanup()
            except DataPlaneError as error:
                log.warning("event=check_paths_cleanup_failed error=%s", error)
        for ifname in list(self._attached) if detach else ():
            try:
                self.detach(ifname)
            except DataPlaneError as error:
                log.warning("event=detach_failed interface=%s error=%s", ifname, error)
        if not detach:
            log.info("event=xdp_left_attached interfaces=%s", ",".join(self._attached) or "none")
            self._attached.clear()
        for view in self._flow_views.values():
            view.close()
        self._flow_views.clear()
        if self._tables is not None:
            self._tables.close()
            self._tables = None
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None
            self._fn = None

    @property
    def prog_fd(self) -> int:
        """File descriptor of the loaded program (for BPF_PROG_TEST_RUN)."""
        return int(self._loaded()[1].fd)

    @property
    def prog_id(self) -> int:
        """The kernel's id of the loaded program: what a link's XDP attributes show while it is attached."""
        return _prog_id(self.prog_fd)

    @property
    def flow_seed(self) -> int:
        """The flow-table index seed chosen at load: tests aim flows at one set with it."""
        self._loaded()
        return self._flow_seed

    def _loaded(self) -> tuple[Any, Any]:
        if self._bpf is None:
            raise DataPlaneError("the data plane is not loaded: call setup() first")
        return self._bpf, self._fn

    def table(self, name: str) -> Any:
        """A bcc map by name (tests and metrics read them directly)."""
        return self._loaded()[0][name.encode()]

    # interfaces

    def attach(self, ifname: str, mode: AttachMode = "auto") -> str:
        """Attach to ``ifname``; ``auto`` tries native mode and falls back to generic. Returns the mode used."""
        from bcc import BPF

        _, fn = self._loaded()
        modes = ["native", "generic"] if mode == "auto" else [mode]
        for index, candidate in enumerate(modes):
            flags = _XDP_FLAGS[candidate]
            try:
                BPF.attach_xdp(ifname.encode(), fn, flags)
            except Exception as error:
                if index + 1 < len(modes):
                    log.warning("event=xdp_native_failed interface=%s error=%s fallback=generic", ifname, error)
                    continue
                raise DataPlaneError(f"attaching XDP to {ifname} in {candidate} mode failed: {error}") from error
            self._now_attached(ifname, candidate)
            return candidate
        raise AssertionError("unreachable")

    def _now_attached(self, ifname: str, mode: str) -> None:
        self._attached[ifname] = _XDP_FLAGS[mode]
        if self._check_paths is not None:
            self._check_paths.attach(ifname)
        before = self._ifindexes.get(ifname)
        self._ifindexes[ifname] = self._set_interface_mac(ifname)
        if before is not None and before not in self._ifindexes.values():  # re-created: a new ifindex
            self.remove_egress(before)
        log.info("event=xdp_attached interface=%s mode=%s", ifname, mode)

    def earlier_program(self, ifname: str) -> "EarlierProgram | None":
        """The xdplb program that an earlier run left attached to ``ifname`` (a restart, or a crash), or None.
        Netlink: not from a thread that runs an event loop."""
        found = _xdp_programs.attached(ifname)
        if found is None or found[0] not in _XDP_FLAGS:
            return None
        try:
            name = _xdp_programs.prog_name(found[1])
        except DataPlaneError:
            return None  # gone meanwhile
        return EarlierProgram(typing.cast(AttachMode, found[0]), found[1]) if name == _PROG_NAME else None

    def inherit(self, earlier: "EarlierProgram") -> bool:
        """Carry the state of ``earlier`` (an earlier run's program, still attached) over into this program's maps,
        after this run's services are written and before ``take_over``: the counters (the totals, each service's
        matched by VIP, port and protocol, each backend's by service and by tunnel address or MAC) and the flow
        table (each flow to the same backend, in this run's slot: ``_flow_carry``). What ``earlier`` does between
        this call and the swap is not carried. False, and nothing written, when ``earlier`` has another ABI (its
        ``abi`` map, missing before the ABI had a number) or a map of another layout."""
        ours = {name: int(self.table(name).map_fd) for name in _INHERITED}
        theirs = _xdp_programs.maps_of(earlier.prog_id)
        try:
            found = _xdp_programs.read_raw(theirs["abi"], bytes(4), 4) if "abi" in theirs else None
            their_abi = int.from_bytes(found, "little") if found is not None else None
            if their_abi != _abi.ABI:
                log.warning(
                    "event=state_not_inherited prog_id=%d reason=another_abi abi=%s ours=%d "
                    "note=counters_from_zero_flows_by_maglev",
                    earlier.prog_id,
                    their_abi,
                    _abi.ABI,
                )
                return False
            if any(
                name not in theirs or _xdp_programs.map_sizes(theirs[name])[:2] != _xdp_programs.map_sizes(fd)[:2]
                for name, fd in ours.items()
            ):
                log.warning("event=state_not_inherited prog_id=%d reason=another_layout", earlier.prog_id)
                return False
            with self._lock:
                services, slots = self._inherit(ours, theirs)
                flows = {family: self._carry_flows(family, theirs[f"flows_v{family}"], slots) for family in (4, 6)}
        finally:
            for fd in theirs.values():
                os.close(fd)
        log.info(
            "event=state_inherited prog_id=%d services=%d backends=%d flows_v4=%d flows_v6=%d",
            earlier.prog_id,
            services,
            len(slots),
            flows[4],
            flows[6],
        )
        return True

    def _carry_flows(self, family: int, old_fd: int, slots: Mapping[int, tuple[int, int, int]]) -> int:
        if not slots:
            return 0
        _, set_size, old_sets = _xdp_programs.map_sizes(old_fd)
        new_fd = int(self.table(f"flows_v{family}").map_fd)

        def pages(sets: int) -> int:
            return -(-sets * set_size // mmap.PAGESIZE) * mmap.PAGESIZE

        with (
            mmap.mmap(old_fd, pages(old_sets), mmap.MAP_SHARED, mmap.PROT_READ) as old,
            mmap.mmap(new_fd, pages(self.settings.flow_sets), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as new,
        ):
            return _flow_carry.carry_flows(family, old, old_sets, new, self.settings.flow_sets, self._flow_seed, slots)

    def _inherit(
        self, ours: Mapping[str, int], theirs: Mapping[str, int]
    ) -> tuple[int, dict[int, tuple[int, int, int]]]:
        sizes = {name: _xdp_programs.map_sizes(fd) for name, fd in theirs.items() if name in _INHERITED}
        cpus = _xdp_programs.possible_cpus()

        def row(name: str, index: int) -> bytes | None:
            return _xdp_programs.read_raw(theirs[name], index.to_bytes(4, "little"), _round8(sizes[name][1]) * cpus)

        def copy(name: str, old: int, new: int) -> None:
            value = row(name, old)
            if value is not None:
                _xdp_programs.write_raw(ours[name], new.to_bytes(4, "little"), value)

        copy("global_stats", 0, 0)
        old_ids: dict[int, ServiceKey] = {}
        for family, name in ((4, "services_v4"), (6, "services_v6")):
            key_size, value_size, _ = sizes[name]
            for raw_key in _xdp_programs.keys_of(theirs[name], key_size):
                value = _xdp_programs.read_raw(theirs[name], raw_key, value_size)
                if value is not None:
                    old_ids[int.from_bytes(value[:4], "little")] = _service_key(family, raw_key)
        old_keys = set(old_ids.values())
        programmed = {key: service for key, service in self._services.items() if key in old_keys}
        for old_id, key in old_ids.items():
            if key in programmed:
                copy("service_stats", old_id, programmed[key].service_id)
        # A backend's slot: by its service and its tunnel address, or its MAC (what the old maps say of a slot).
        wanted: dict[tuple[int, bytes], int] = {}
        by_key = {service.service_id: service for service in programmed.values()}
        old_of_new = {service.service_id: old for old, key in old_ids.items() if (service := programmed.get(key))}
        for new_id, service in by_key.items():
            for backend in service.spec.backends:
                slot = service.slots.get(backend.address)
                if slot is None:
                    continue
                identity = (
                    backend.address.packed.ljust(16, b"\0")
                    if backend.tunnel is not None
                    else bytes.fromhex((backend.mac or "").replace(":", ""))
                )
                wanted[(old_of_new[new_id], identity)] = slot
        _, backends_size, backend_slots = sizes["backends"]
        dests_size = sizes["tunnel_dests"][1]
        slots: dict[int, tuple[int, int, int]] = {}  # old slot -> this run's slot and generation, and the old one
        for old_slot in range(1, backend_slots):
            if not wanted:
                break
            value = _xdp_programs.read_raw(theirs["backends"], old_slot.to_bytes(4, "little"), backends_size)
            flags = int.from_bytes(value[12:16], "little") if value is not None else 0
            if value is None or not flags & _abi.BACKEND_USABLE:  # never written, removed, or no MAC: no flows
                continue
            old_id, old_generation = int.from_bytes(value[16:20], "little"), int.from_bytes(value[8:12], "little")
            if flags & _TUNNEL_MASK:
                dest = _xdp_programs.read_raw(theirs["tunnel_dests"], old_slot.to_bytes(4, "little"), dests_size)
                identity = dest[:16] if dest is not None else b""
            else:
                identity = value[:6]
            new_slot = wanted.pop((old_id, identity), None)
            if new_slot is not None:
                copy("backend_stats", old_slot, new_slot)
                slots[old_slot] = (new_slot, self._generations.get(new_slot, 0), old_generation)
        self._counter_rows = None
        return len(programmed), slots

    def take_over(self, ifname: str, earlier: "EarlierProgram") -> None:
        """Put this program on ``ifname`` in place of ``earlier``, in one step (``XDP_FLAGS_REPLACE``): the kernel
        swaps them only if ``earlier`` is still the one attached, and refuses otherwise (DataPlaneError), so a
        program attached meanwhile by someone else is never replaced unseen."""
        _, fn = self._loaded()
        try:
            _xdp_programs.replace(ifname, int(fn.fd), earlier.prog_id, _XDP_FLAGS[earlier.mode])
        except DataPlaneError as error:
            raise DataPlaneError(f"taking over XDP on {ifname} from program {earlier.prog_id}: {error}") from error
        self._now_attached(ifname, earlier.mode)

    def prepare(self, ifname: str) -> None:
        """All of ``attach`` but the attaching: the interface's source MAC and ``tx_ports`` entry in this program's
        maps, and its ifindex in ``attached_ifindexes``, so that services on it can be written before the program
        replaces an earlier run's (``attach`` later swaps it in, in one step)."""
        self._loaded()
        self._ifindexes[ifname] = self._set_interface_mac(ifname)

    def detach(self, ifname: str) -> None:
        """Detach from ``ifname`` (in the mode it was attached with)."""
        from bcc import BPF

        flags = self._attached.pop(ifname, None)
        ifindex = self._ifindexes.pop(ifname, None)
        if ifindex is not None and ifindex not in self._ifindexes.values():
            self.remove_egress(ifindex)
        if self._check_paths is not None:
            self._check_paths.detach(ifname)
        if flags is None:
            return
        try:
            BPF.remove_xdp(ifname.encode(), flags)
        except Exception as error:
            raise DataPlaneError(f"detaching XDP from {ifname} failed: {error}") from error
        log.info("event=xdp_detached interface=%s", ifname)

    @property
    def attached(self) -> Mapping[str, str]:
        """Interfaces the program is attached to, with the mode."""
        names = {flags: name for name, flags in _XDP_FLAGS.items()}
        return {ifname: names[flags] for ifname, flags in self._attached.items()}

    @property
    def attached_ifindexes(self) -> Mapping[str, int]:
        """Interfaces the program is attached to, with the ifindex each had then (a re-created one has another)."""
        return dict(self._ifindexes)

    def release(self, device: str, mode: str) -> None:
        """Detach from ``device``, which ``attached`` does not list: one attached under another name, since renamed.

        The record of the name it was attached as stays, so the daemon attaches again when that name comes back.
        """
        from bcc import BPF

        try:
            BPF.remove_xdp(device.encode(), _XDP_FLAGS[mode])
        except Exception as error:
            raise DataPlaneError(f"detaching XDP from {device} failed: {error}") from error
        log.info("event=xdp_detached interface=%s", device)

    def _set_interface_mac(self, ifname: str) -> int:
        # ioctls, not netlink or /sys: right in whatever network namespace this thread is in, and safe to call from
        # a thread that runs an event loop (pyroute2's sync API refuses those).
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            request = struct.pack("256s", ifname.encode()[:15])
            hwaddr = fcntl.ioctl(sock.fileno(), _SIOCGIFHWADDR, request)[18:24]
        ifindex = socket.if_nametoindex(ifname)
        self.set_egress(ifindex, hwaddr.hex(":"))
        return ifindex

    def set_egress(self, ifindex: int, mac: str) -> None:
        """Let frames leave through ``ifindex`` (``attach`` does it): its source MAC, and its ``tx_ports`` entry for
        XDP_REDIRECT. The ifindex is that of the calling thread's network namespace. Backends programmed on it
        while it was missing come in at their service's next update."""
        self.set_interface_mac(ifindex, mac)
        if ifindex >= self.settings.max_ifindex:
            return  # no redirect there: its backends are reported "interface N not attached"
        tx_ports = self.table("tx_ports")
        tx_ports[tx_ports.Key(ifindex)] = tx_ports.Leaf(ifindex)
        self._egress.add(ifindex)
        self._services_changed()

    def remove_egress(self, ifindex: int) -> None:
        """No more frames out of ``ifindex`` (``detach`` does it): a backend there drops until it is moved."""
        self._egress.discard(ifindex)
        if ifindex < self.settings.max_ifindex:
            tx_ports = self.table("tx_ports")
            try:
                del tx_ports[tx_ports.Key(ifindex)]
            except KeyError:
                pass
        self._services_changed()

    def _services_changed(self) -> None:
        """The set of egress interfaces changed: the next ``set_service`` of a service with a backend on a given
        interface writes it again (``needs_update`` says so)."""
        for programmed in self._services.values():
            if any(b.ifindex for b in programmed.spec.backends):
                programmed.stale = True

    def set_interface_mac(self, ifindex: int, mac: str) -> None:
        """Source MAC for frames forwarded out of ``ifindex`` (done by ``attach``)."""
        interfaces = self.table("interfaces")
        value = interfaces.Leaf()
        value.mac[:] = list(bytes.fromhex(mac.replace(":", "")))
        value.known = 1
        if ifindex >= self.settings.max_ifindex:
            log.warning(
                "event=ifindex_beyond_map ifindex=%d max_ifindex=%d source_mac=frame_destination",
                ifindex,
                self.settings.max_ifindex,
            )
            return
        interfaces[interfaces.Key(ifindex)] = value

    def set_tunnel(
        self, source_v4: config.IpAddress | None, source_v6: config.IpAddress | None, gue_port: int = DEFAULT_GUE_PORT
    ) -> None:
        """The node's tunnel settings: the outer source address of each family (None: no tunnels of that family;
        ``set_service`` refuses them) and the UDP destination port of GUE."""
        if source_v4 is not None and source_v4.version != 4 or source_v6 is not None and source_v6.version != 6:
            raise DataPlaneError("tunnel sources: an IPv4 and an IPv6 address")
        if not 0 < gue_port < 65536:
            raise DataPlaneError(f"GUE port {gue_port} out of range")
        configs = self.table("tunnel_configs")
        value = configs.Leaf()
        value.source_v4 = int.from_bytes(source_v4.packed, "little") if source_v4 is not None else 0
        value.source_v6[:] = list(source_v6.packed if source_v6 is not None else bytes(16))
        value.gue_port = socket.htons(gue_port)
        configs[configs.Key(0)] = value
        self._tunnel_sources = {4: source_v4, 6: source_v6}
        self._gue_port = gue_port
        for path_id, (vip, backend, tunnel) in list(self._check_routes.items()):
            if tunnel is not None and self._tunnel_sources.get(backend.version) is not None:
                self.set_check_path(path_id, vip, backend, tunnel)

    # checks through the data path

    @property
    def check_paths_enabled(self) -> bool:
        """Whether ``enable_check_paths`` has loaded the check path programs."""
        return self._check_paths is not None

    def enable_check_paths(self) -> None:
        """Load the tc programs that send checks through the data path (a second: clang runs) and put them on every
        interface the XDP program is on, and on those it is attached to later. Idempotent."""
        if self._check_paths is not None:
            return
        paths = check_path.load()
        _return_free_heap()
        try:
            for ifname in self._attached:
                paths.attach(ifname)
        except DataPlaneError:
            paths.cleanup()
            raise
        self._check_paths = paths

    def set_check_path(
        self, path_id: int, vip: config.IpAddress, backend: config.IpAddress, tunnel: Tunnel | None
    ) -> None:
        """Checks marked ``check_path.mark_of(path_id)``, connected to ``backend``, go to ``vip`` by the backend's
        forwarding: ``tunnel`` None (layer 2), ``"ipip"`` or ``"gue"`` from this node's tunnel source."""
        if self._check_paths is None:
            raise DataPlaneError("check paths are not loaded: call enable_check_paths() first")
        if tunnel not in (None, "ipip", "gue"):
            raise DataPlaneError(f"check path {path_id}: unknown tunnel {tunnel!r}")
        source = self._tunnel_sources.get(backend.version) if tunnel is not None else None
        path = check_path.CheckPath(vip, backend, tunnel, source, self._gue_port)
        self._check_paths.put(path_id, path)
        self._check_routes[path_id] = (vip, backend, tunnel)

    def remove_check_path(self, path_id: int) -> None:
        """No more checks by ``path_id`` (its marked packets are dropped from now on)."""
        self._check_routes.pop(path_id, None)
        if self._check_paths is not None:
            self._check_paths.remove(path_id)

    def check_path_counters(self) -> check_path.CheckPathCounters:
        """What the check path programs did (all zero when they are not loaded)."""
        return self._check_paths.counters() if self._check_paths is not None else check_path.CheckPathCounters()

    def _write_tunnel_dest(self, slot: int, backend: Backend) -> None:
        family = backend.address.version
        if self._tunnel_sources.get(family) is None:
            raise DataPlaneError(
                f"backend {backend.address}: {backend.tunnel} needs a tunnel source of IPv{family} (set_tunnel)"
            )
        dests = self.table("tunnel_dests")
        value = dests.Leaf()
        value.addr[:] = list(backend.address.packed.ljust(16, b"\0"))
        value.family = family
        key = dests.Key(slot)
        if bytes(dests[key]) != bytes(value):
            dests[key] = value

    # services

    def set_service(self, service: Service) -> ServiceStatus:
        """Create or replace a service with its backends, weights and options, in one atomic step for readers.

        Idempotent: the same ``service`` again writes nothing. Backends whose MAC is unknown are kept out of the
        table (see the returned status) and come in when a later call gives their MAC. DataPlaneError if the
        update cannot be made; the service then serves as before (a new one is not added).
        """
        with self._lock:
            return self._set_service(service)

    def _set_service(self, service: Service) -> ServiceStatus:
        self._loaded()
        service.validate()
        programmed = self._services.get(service.key)
        if programmed is not None and programmed.status is not None and not self.needs_update(service):
            return programmed.status
        added = programmed is None
        if programmed is None:
            if not self._free_ids:
                raise DataPlaneError(f"too many services (max_services={self.settings.max_services})")
            programmed = _ProgrammedService(spec=service, service_id=self._free_ids.popleft())
            self._zero_stats("service_stats", programmed.service_id)
            self._services[service.key] = programmed
            self._vip_refcount(service.key.vip, +1)
        previous, programmed.spec = programmed.spec, service
        self._counter_rows = None  # slots may change below
        try:
            status = self._program(programmed)
        except DataPlaneError:
            programmed.spec = previous
            if added:
                self.remove_service(service.key)
            raise
        if added:
            log.info("event=service_added service=%s", service.key)
        return status

    def remove_service(self, key: ServiceKey) -> None:
        """Stop balancing ``key``: its packets go to the kernel again and its backends' flows end."""
        with self._lock:
            self._remove_service(key)

    def _remove_service(self, key: ServiceKey) -> None:
        programmed = self._services.pop(key, None)
        if programmed is None:
            return
        self._counter_rows = None
        services = self.table(_family_map("services", key.vip))
        try:
            del services[self._service_key(key)]
        except KeyError:  # an add that failed before its entry was written
            pass
        self._vip_refcount(key.vip, -1)
        for slot in programmed.slots.values():
            self._retire_slot(slot)
        if programmed.table_id is not None:
            self._table_store().retire(programmed.table_id)
        self._free_ids.append(programmed.service_id)
        log.info("event=service_removed service=%s", key)

    @property
    def services(self) -> Mapping[ServiceKey, ServiceStatus]:
        """Status of every programmed service."""
        with self._lock:
            return {key: p.status for key, p in self._services.items() if p.status is not None}

    def reserve_tables(self, services: Sequence[Service]) -> None:
        """Make room, in one kernel call, for the Maglev tables that ``set_service`` of each of ``services`` will
        write: each install would otherwise wait for an RCU grace period of its own (8 ms). Optional; best effort."""
        with self._lock:
            self._loaded()
            sizes = [s.table_size for s in services if self.needs_update(s) and self.table_key(s) is not None]
            if len(sizes) > 1:
                self._table_store().reserve(sizes)

    def needs_update(self, service: Service) -> bool:
        """Whether ``set_service(service)`` would change anything (cheap: no map is read)."""
        programmed = self._services.get(service.key)
        return programmed is None or programmed.spec != service or programmed.status is None or programmed.stale

    def table_key(self, service: Service) -> TableKey | None:
        """The ``maglev`` cache key of the table ``service`` needs (None: no backend takes new flows)."""
        candidates = [
            (str(b.address), b.weight)
            for b in service.backends
            if b.reachable_by_frame and b.weight > 0 and (not b.ifindex or b.ifindex in self._egress)
        ]
        return self.maglev.key(candidates, service.table_size) if candidates else None

    def read_table(self, key: ServiceKey) -> list[config.IpAddress]:
        """The Maglev table of ``key`` as the program reads it from the kernel maps: a backend address per entry."""
        programmed = self._services.get(key)
        services = self.table(_family_map("services", key.vip))
        entry = services.get(self._service_key(key))
        if programmed is None or entry is None or entry.table_size == 0:
            return []
        by_slot = {slot: address for address, slot in programmed.slots.items()}
        return [by_slot[slot] for slot in self._table_store().read(entry.table_id)]

    def _table_store(self) -> TableStore:
        if self._tables is None:
            raise DataPlaneError("the data plane is not loaded: call setup() first")
        return self._tables

    def _program(self, programmed: _ProgrammedService) -> ServiceStatus:
        service = programmed.spec
        backends_map = self.table("backends")
        wanted = {b.address for b in service.backends}
        added: list[config.IpAddress] = []
        statuses = []
        candidates: list[tuple[str, int]] = []
        candidate_slots: list[int] = []
        try:
            for backend in service.backends:
                mac = backend.mac
                slot = programmed.slots.get(backend.address)
                if slot is None:
                    slot = self._new_slot()
                    programmed.slots[backend.address] = slot
                    added.append(backend.address)
                value = backends_map.Leaf()
                reachable = not backend.ifindex or backend.ifindex in self._egress
                if backend.tunnel is not None:
                    self._write_tunnel_dest(slot, backend)
                    value.flags = _abi.BACKEND_USABLE | _TUNNEL_FLAGS[backend.tunnel]
                elif mac is not None:
                    value.mac[:] = list(bytes.fromhex(mac.replace(":", "")))
                    value.flags = _abi.BACKEND_USABLE if reachable else 0
                value.vlan = backend.vlan
                value.ifindex = backend.ifindex
                value.generation = self._generations[slot]
                value.service_id = programmed.service_id
                key = backends_map.Key(slot)
                if bytes(backends_map[key]) != bytes(value):
                    backends_map[key] = value
                if backend.reachable_by_frame and reachable and backend.weight > 0:
                    candidates.append((str(backend.address), backend.weight))
                    candidate_slots.append(slot)
                state = BackendState.ACTIVE if backend.weight else BackendState.DRAINING
                if not backend.reachable_by_frame:
                    state = BackendState.NO_MAC
                elif not reachable:
                    state = BackendState.NO_INTERFACE
                statuses.append((backend, mac, slot, state))

            # Building a table costs milliseconds: only when what it is built from changed.
            inputs = (tuple(candidates), tuple(candidate_slots), service.table_size, service.sticky)
            if inputs != programmed.inputs:
                self._switch_table(programmed, candidates, candidate_slots, inputs)
        except Exception as error:
            for address in added:
                self._retire_slot(programmed.slots.pop(address))
            if isinstance(error, DataPlaneError):
                raise
            raise DataPlaneError(f"{service.key}: map update failed: {error}") from error  # bcc raises bare Exceptions
        for address in [a for a in programmed.slots if a not in wanted]:  # only now: the live table no longer uses them
            self._retire_slot(programmed.slots.pop(address))
        programmed.stale = False
        programmed.status = ServiceStatus(
            key=service.key,
            service_id=programmed.service_id,
            table_size=sum(programmed.entries.values()),
            backends=tuple(
                BackendStatus(b.address, b.weight, mac, slot, programmed.entries.get(slot, 0), state, b.ifindex)
                for b, mac, slot, state in statuses
            ),
        )
        return programmed.status

    def _switch_table(
        self,
        programmed: _ProgrammedService,
        candidates: list[tuple[str, int]],
        candidate_slots: list[int],
        inputs: tuple[object, ...],
    ) -> None:
        """Write the table for ``candidates`` and point the service entry at it (the atomic switch for readers)."""
        service = programmed.spec
        table, counts = (
            place(self.maglev.table(candidates, service.table_size), candidate_slots) if candidates else ([], [])
        )
        table_id = self._table_store().write(table) if table else None
        flags = _abi.SERVICE_STICKY if service.sticky else 0
        services = self.table(_family_map("services", service.key.vip))
        value = services.Leaf(programmed.service_id, flags, table_id or 0, len(table))
        try:
            services[self._service_key(service.key)] = value
        except Exception:
            if table_id is not None:
                self._table_store().retire(table_id)
            raise
        if programmed.table_id is not None:
            self._table_store().retire(programmed.table_id)
        programmed.table_id, programmed.inputs = table_id, inputs
        programmed.entries = {slot: count for slot, count in zip(candidate_slots, counts, strict=True) if count}
        log.info(
            "event=service_programmed service=%s backends=%d table_size=%d", service.key, len(candidates), len(table)
        )

    def _new_slot(self) -> int:
        if not self._free_slots:
            raise DataPlaneError(f"too many backends (max_backends={self.settings.max_backends})")
        slot = self._free_slots.popleft()
        self._generations[slot] = self._generations.get(slot, 0) + 1
        self._zero_stats("backend_stats", slot)
        return slot

    def _retire_slot(self, slot: int) -> None:
        self._generations[slot] += 1
        backends_map = self.table("backends")
        backends_map[backends_map.Key(slot)] = backends_map.Leaf(generation=self._generations[slot])
        self._free_slots.append(slot)

    def _zero_stats(self, name: str, index: int) -> None:
        stats = self.table(name)
        stats[stats.Key(index)] = stats.Leaf(*([stats.sLeaf()] * len(stats.Leaf())))

    def _service_key(self, key: ServiceKey) -> Any:
        services = self.table(_family_map("services", key.vip))
        skey = services.Key()
        if key.vip.version == 4:
            skey.addr = int.from_bytes(key.vip.packed, "little")
        else:
            skey.addr[:] = list(key.vip.packed)
        skey.port = socket.htons(key.port)
        skey.proto = PROTO_NUMBERS[key.proto]
        return skey

    def _vip_refcount(self, vip: config.IpAddress, delta: int) -> None:
        addrs = self.table(_family_map("vip_addrs", vip))
        key = addrs.Key()
        if vip.version == 4:
            key.value = int.from_bytes(vip.packed, "little")
        else:
            ctypes.memmove(ctypes.addressof(key), vip.packed, 16)
        count = addrs.get(key)
        total = (count.value if count is not None else 0) + delta
        if total > 0:
            addrs[key] = addrs.Leaf(total)
        elif count is not None:
            del addrs[key]

    # counters

    def read_totals(self) -> GlobalCounters:
        """The global counters alone (``read_counters().totals``, without the per-service and per-backend rows)."""
        return read_totals(self.table)

    def read_counters(self) -> Counters:
        """Sum the per-CPU counters: global, per service and per backend."""
        with self._lock:
            if self._counter_rows is None:
                self._counter_rows = (
                    {key: p.service_id for key, p in self._services.items()},
                    {(key, address): slot for key, p in self._services.items() for address, slot in p.slots.items()},
                )
            rows = self._counter_rows
        return read_counters(self.table, *rows)

    def flow_table_entries(self) -> dict[int, int]:
        """Active flows in the flow table, by IP version: entries seen within the last ``FLOW_ACTIVE_UNITS``
        (~64 s). Entries are never emptied (an idle flow's entry stays until a new flow takes its way), so this
        counts what is in use, not what was ever filled. Read in place through the maps' mmap, 3-5 ms per
        65536 entries; a larger table is estimated from its first 65536 entries (flows spread evenly over sets:
        the index hash has a random seed), so a scrape costs at most about 10 ms."""
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) >> 30  # bpf_ktime_get_coarse_ns() >> 30
        return {family: self._active_flows(family, now) for family in (4, 6)}

    def _active_flows(self, family: int, now: int) -> int:
        table = self.table(f"flows_v{family}")
        view = self._flow_views.get(family)
        set_size = ctypes.sizeof(table.Leaf)
        if view is None:
            size = -(-self.settings.flow_sets * set_size // mmap.PAGESIZE) * mmap.PAGESIZE
            view = self._flow_views[family] = mmap.mmap(table.get_fd(), size, mmap.MAP_SHARED, mmap.PROT_READ)
        entry = table.Leaf._fields_[0][1]._type_  # struct flow_entry_*
        stride, seen_at = ctypes.sizeof(entry) // 4, entry.seen.offset // 4
        sets = min(self.settings.flow_sets, _ACTIVE_SAMPLE_SETS)
        with memoryview(view) as raw, raw.cast("I") as words, words[seen_at : sets * set_size // 4 : stride] as seen:
            # Never below 0: an empty entry's 0 is not a flow seen in a machine's first minute.
            active = sum(map(max(now - _FLOW_ACTIVE_UNITS, 0).__lt__, seen.tolist()))
        return active * self.settings.flow_sets // sets

    def clear_flows(self) -> None:
        """Forget every established flow (each then follows its Maglev choice again)."""
        for family in (4, 6):
            self.table(f"flows_v{family}").clear()

    def count_flow_entries(self) -> dict[int, int]:
        """Flow-table entries in use, by IP version, by reading every entry (slow; for tests and checks)."""
        return {4: _count(self.table("flows_v4")), 6: _count(self.table("flows_v6"))}


def _count(table: Any) -> int:
    """Entries in use in a flow table: generations start at 1, so 0 marks an empty entry."""
    try:
        sets = [value for _, value in table.items_lookup_batch()]
    except Exception:  # kernels without batch lookups on arrays
        sets = list(table.values())
    return sum(1 for flow_set in sets for entry in flow_set.way if entry.flow.generation)


def _prog_id(fd: int) -> int:
    """A BPF program's id from ``/proc/self/fdinfo`` (no bpf(2) struct to lay out for one number)."""
    with open(f"/proc/self/fdinfo/{fd}") as file:
        for line in file:
            key, _, value = line.partition(":")
            if key == "prog_id":
                return int(value)
    raise DataPlaneError(f"fd {fd} is not a BPF program (no prog_id in its fdinfo)")


def _round8(size: int) -> int:
    return (size + 7) // 8 * 8


def _service_key(family: int, raw: bytes) -> ServiceKey:
    """A ``struct service_key_v4``/``_v6`` as a ServiceKey."""
    size = 4 if family == 4 else 16
    protocols = {number: name for name, number in PROTO_NUMBERS.items()}
    vip = ipaddress.ip_address(raw[:size])
    port = int.from_bytes(raw[size : size + 2], "big")
    return ServiceKey(vip, port, protocols.get(raw[size + 2], "tcp"))  # type: ignore[arg-type]


def _family_map(prefix: str, vip: config.IpAddress) -> str:
    return f"{prefix}_v{vip.version}"


def _return_free_heap() -> None:
    """Give the heap clang freed back to the OS (which malloc keeps otherwise), and the compiler's code pages."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
    _compiler_pages.release()
