"""The XDP programs on an interface and what they are, read from the kernel (netlink, and libbpf's calls as bcc's
library exports them): for ``decap`` and for a data plane taking over from an earlier run's program."""

import ctypes
import ctypes.util
import functools
import os
import socket
from typing import Any

from bpf.errors import DataPlaneError

__all__ = ["attached", "prog_name", "replace"]

# IFLA_XDP_*_PROG_ID (include/uapi/linux/if_link.h): the program attached in each mode, absent when none.
_PROG_IDS = {"IFLA_XDP_DRV_PROG_ID": "native", "IFLA_XDP_SKB_PROG_ID": "generic", "IFLA_XDP_HW_PROG_ID": "offload"}


class _ProgInfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
                ("jited_prog_len", ctypes.c_uint32), ("xlated_prog_len", ctypes.c_uint32),
                ("jited_prog_insns", ctypes.c_uint64), ("xlated_prog_insns", ctypes.c_uint64),
                ("load_time", ctypes.c_uint64), ("created_by_uid", ctypes.c_uint32),
                ("nr_map_ids", ctypes.c_uint32), ("map_ids", ctypes.c_uint64), ("name", ctypes.c_char * 16)]


def _lib() -> Any:
    from bcc import libbcc

    return libbcc.lib


def _info(fd: int, info: ctypes.Structure) -> None:
    size = ctypes.c_uint32(ctypes.sizeof(info))
    if _lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)) != 0:
        raise DataPlaneError(f"reading BPF object info failed: {os.strerror(ctypes.get_errno() or 1)}")


def _prog_fd(prog_id: int) -> int:
    fd = int(_lib().bpf_prog_get_fd_by_id(prog_id))
    if fd < 0:
        raise DataPlaneError(f"no BPF program with id {prog_id}")
    return fd


def prog_name(prog_id: int) -> str:
    """The name the program was loaded with (15 characters at most)."""
    fd = _prog_fd(prog_id)
    try:
        info = _ProgInfo()
        _info(fd, info)
        return str(info.name.decode())
    finally:
        os.close(fd)


def attached(ifname: str) -> tuple[str, int] | None:
    """(mode, program id) of the XDP program on ``ifname``, or None."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        indexes = ipr.link_lookup(ifname=ifname)
        if not indexes:
            raise DataPlaneError(f"no interface {ifname}")
        (link,) = ipr.get_links(indexes[0])
    xdp = link.get_attr("IFLA_XDP")
    for attr, mode in _PROG_IDS.items():
        prog_id = xdp.get_attr(attr) if xdp is not None else None
        if prog_id:
            return mode, int(prog_id)
    return None


_XDP_FLAGS_REPLACE = 1 << 4


class _XdpAttachOpts(ctypes.Structure):
    """libbpf's ``struct bpf_xdp_attach_opts``."""

    _fields_ = [("sz", ctypes.c_size_t), ("old_prog_fd", ctypes.c_int)]


@functools.cache
def _libbpf() -> Any:
    name = ctypes.util.find_library("bpf")
    if name is None:
        raise DataPlaneError("libbpf not found: install libbpf1")
    lib = ctypes.CDLL(name, use_errno=True)
    lib.bpf_xdp_attach.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_uint32, ctypes.POINTER(_XdpAttachOpts)]
    lib.bpf_xdp_attach.restype = ctypes.c_int
    return lib


def replace(ifname: str, prog_fd: int, expected_id: int, mode_flags: int) -> None:
    """Attach ``prog_fd`` to ``ifname`` in place of program ``expected_id``, atomically and only if that one is still
    there (``XDP_FLAGS_REPLACE``); DataPlaneError otherwise."""
    try:
        ifindex = socket.if_nametoindex(ifname)
    except OSError as error:
        raise DataPlaneError(f"no interface {ifname}") from error
    old_fd = _prog_fd(expected_id)
    try:
        opts = _XdpAttachOpts(sz=ctypes.sizeof(_XdpAttachOpts), old_prog_fd=old_fd)
        code = _libbpf().bpf_xdp_attach(ifindex, prog_fd, mode_flags | _XDP_FLAGS_REPLACE, ctypes.byref(opts))
    finally:
        os.close(old_fd)
    if code != 0:
        raise DataPlaneError(f"the kernel refused the swap: {os.strerror(-code)} (another program is attached?)")
