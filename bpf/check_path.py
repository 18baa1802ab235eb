"""Health checks through the data path: ``check_path.c``'s two tc programs, loaded and attached with libbpf's tc API.

A checker that marks its socket with ``mark_of(id)`` and connects to a backend's own address reaches the backend
as traffic to the VIP of path ``id`` would: with the VIP as destination, inside the backend's tunnel if it has one.
The backend answers from the VIP, and the answer is handed back to the socket as if from the backend's address. Why
this way (and not Katran's socket to the VIP, or vc5's namespace with NAT addresses): bpf/README.md.
"""

import ctypes
import dataclasses
import errno
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import config
from bpf import _xdp_programs
from bpf._kernel_source import ensure_kernel_source
from bpf.errors import DataPlaneError
from bpf.service import Tunnel

__all__ = ["CHECK_MARK_BASE", "MAX_CHECK_PATHS", "CheckPath", "CheckPathCounters", "CheckPaths", "mark_of"]

log = logging.getLogger(__name__)

PROGRAM = Path(__file__).with_name("check_path.c")
CHECK_MARK_BASE = 0x58440000  # "XD": the high 16 bits of SO_MARK that say "a check through the data path"
MAX_CHECK_PATHS = 65536  # the low 16 bits are the path's id
_MODES = {None: 0, "ipip": 1, "gue": 2}
_TC_INGRESS, _TC_EGRESS = 1, 2  # enum bpf_tc_attach_point
_TC_F_REPLACE = 1
_HANDLE = 1
_PRIORITY = 0x5844  # our filters' priority on the clsact hooks: others' filters are left alone


def mark_of(path_id: int) -> int:
    """The SO_MARK of a checker's socket for path ``path_id``."""
    if not 0 <= path_id < MAX_CHECK_PATHS:
        raise ValueError(f"check path id {path_id} out of range 0-{MAX_CHECK_PATHS - 1}")
    return CHECK_MARK_BASE | path_id


@dataclass(frozen=True)
class CheckPath:
    """Where checks of one backend of one service go: to ``vip`` by the backend's forwarding (``tunnel`` None: layer
    2, the backend's own MAC; else inside that tunnel from ``source`` to the backend's address)."""

    vip: config.IpAddress
    backend: config.IpAddress
    tunnel: Tunnel | None = None
    source: config.IpAddress | None = None
    gue_port: int = 6080

    def __post_init__(self) -> None:
        if self.vip.version != self.backend.version:
            raise DataPlaneError(f"check path to {self.vip} by {self.backend}: a VIP and a backend of one family")
        if self.tunnel is not None and (self.source is None or self.source.version != self.backend.version):
            raise DataPlaneError(
                f"check path to {self.vip} by {self.backend}: {self.tunnel} needs a tunnel source "
                f"of IPv{self.backend.version}"
            )


@dataclass(frozen=True)
class CheckPathCounters:
    """``struct check_path_stats`` of check_path.c, summed over CPUs."""

    sent: int = 0
    tunnelled: int = 0
    replies: int = 0
    unknown: int = 0
    refused: int = 0


class _TcHook(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("ifindex", ctypes.c_int),
        ("attach_point", ctypes.c_int),
        ("parent", ctypes.c_uint32),
    ]


class _TcOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("prog_fd", ctypes.c_int),
        ("flags", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("handle", ctypes.c_uint32),
        ("priority", ctypes.c_uint32),
    ]


def _hook(ifindex: int, point: int) -> _TcHook:
    return _TcHook(sz=ctypes.sizeof(_TcHook), ifindex=ifindex, attach_point=point)


class CheckPaths:
    """The compiled tc programs and their maps (``load()``): ``put``/``remove`` paths, ``attach``/``detach``
    interfaces. Map and netlink calls only: safe from any thread."""

    def __init__(self, bpf: Any) -> None:
        self._bpf = bpf
        self._egress = bpf.load_func(b"check_path_egress", type(bpf).SCHED_CLS)
        self._ingress = bpf.load_func(b"check_path_ingress", type(bpf).SCHED_CLS)
        self._attached: dict[str, int] = {}  # ifname -> ifindex
        self._paths: dict[int, CheckPath] = {}

    @property
    def paths(self) -> dict[int, CheckPath]:
        """The paths in the map, by id."""
        return dict(self._paths)

    @property
    def attached(self) -> dict[str, int]:
        """Interfaces with the programs on, with their ifindex then."""
        return dict(self._attached)

    def put(self, path_id: int, path: CheckPath) -> None:
        """Send checks marked ``mark_of(path_id)`` by ``path``."""
        mark_of(path_id)
        if self._paths.get(path_id) == path:
            return
        table = self._bpf[b"check_paths"]
        value = table.Leaf()
        for name, address in (("vip", path.vip), ("backend", path.backend), ("source", path.source)):
            getattr(value, name)[:] = list((address.packed if address is not None else b"").ljust(16, b"\0"))
        value.family = path.backend.version
        value.mode = _MODES[path.tunnel]
        value.gue_port = socket.htons(path.gue_port)
        try:
            table[table.Key(path_id)] = value
        except Exception as error:  # bcc raises bare Exceptions
            raise DataPlaneError(f"writing check path {path_id} failed: {error}") from error
        self._paths[path_id] = path

    def remove(self, path_id: int) -> None:
        """No more checks by path ``path_id``: its marked packets are dropped."""
        if self._paths.pop(path_id, None) is None:
            return
        table = self._bpf[b"check_paths"]
        try:
            del table[table.Key(path_id)]
        except KeyError:
            pass

    def attach(self, ifname: str) -> None:
        """Put both programs on ``ifname`` (its clsact hooks; created if missing), replacing ours if there."""
        lib = _xdp_programs.libbpf()
        try:
            ifindex = socket.if_nametoindex(ifname)
        except OSError as error:
            raise DataPlaneError(f"attaching check paths to {ifname}: {error.strerror}") from error
        code = lib.bpf_tc_hook_create(ctypes.byref(_hook(ifindex, _TC_INGRESS | _TC_EGRESS)))
        if code not in (0, -errno.EEXIST):
            raise DataPlaneError(f"creating the clsact qdisc on {ifname} failed: {os.strerror(-code)}")
        for point, fn in ((_TC_EGRESS, self._egress), (_TC_INGRESS, self._ingress)):
            opts = _TcOpts(
                sz=ctypes.sizeof(_TcOpts), prog_fd=fn.fd, flags=_TC_F_REPLACE, handle=_HANDLE, priority=_PRIORITY
            )
            code = lib.bpf_tc_attach(ctypes.byref(_hook(ifindex, point)), ctypes.byref(opts))
            if code != 0:
                raise DataPlaneError(f"attaching the check path program to {ifname} failed: {os.strerror(-code)}")
        self._attached[ifname] = ifindex
        log.info("event=check_paths_attached interface=%s", ifname)

    def detach(self, ifname: str) -> None:
        """Take our programs off ``ifname`` (its clsact qdisc, and others' filters on it, stay)."""
        ifindex = self._attached.pop(ifname, None)
        if ifindex is None:
            return
        for point in (_TC_EGRESS, _TC_INGRESS):
            opts = _TcOpts(sz=ctypes.sizeof(_TcOpts), handle=_HANDLE, priority=_PRIORITY)
            code = _xdp_programs.libbpf().bpf_tc_detach(ctypes.byref(_hook(ifindex, point)), ctypes.byref(opts))
            if code not in (0, -errno.ENOENT, -errno.ENODEV, -errno.EINVAL):
                raise DataPlaneError(f"detaching the check path program from {ifname} failed: {os.strerror(-code)}")
        log.info("event=check_paths_detached interface=%s", ifname)

    def counters(self) -> CheckPathCounters:
        """The programs' counters, summed over CPUs."""
        table = self._bpf[b"check_path_stats"]
        values = table[table.Key(0)]
        return CheckPathCounters(
            **{f.name: sum(getattr(v, f.name) for v in values) for f in dataclasses.fields(CheckPathCounters)}
        )

    def cleanup(self) -> None:
        """Detach from every interface and unload."""
        errors = []
        for ifname in list(self._attached):
            try:
                self.detach(ifname)
            except DataPlaneError as error:
                errors.append(error)
        self._bpf.cleanup()
        if errors:
            raise errors[0]


def load() -> CheckPaths:
    """Compile and load ``check_path.c`` (a second or so: run it in a thread from asyncio)."""
    from bcc import BPF  # only on Debian's python, and only needed here

    ensure_kernel_source()
    try:
        return CheckPaths(
            BPF(
                src_file=str(PROGRAM).encode(),
                cflags=["-w", f"-I{PROGRAM.parent}", f"-DCHECK_MARK_BASE={CHECK_MARK_BASE}u"],
            )
        )
    except Exception as error:
        raise DataPlaneError(f"loading the check path programs failed: {error}") from error
