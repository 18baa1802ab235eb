"""The XDP programs on an interface and what they are, read from the kernel (netlink, and libbpf's calls as bcc's
library exports them): for ``decap`` and for a data plane taking over from an earlier run's program."""

import ctypes
import ctypes.util
import functools
import os
import socket
from pathlib import Path
from typing import Any

from bpf.errors import DataPlaneError

__all__ = [
    "attached",
    "keys_of",
    "libbpf",
    "map_sizes",
    "maps_of",
    "percpu_values",
    "possible_cpus",
    "prog_name",
    "read",
    "read_raw",
    "replace",
    "write_raw",
]

# IFLA_XDP_*_PROG_ID (include/uapi/linux/if_link.h): the program attached in each mode, absent when none.
_PROG_IDS = {"IFLA_XDP_DRV_PROG_ID": "native", "IFLA_XDP_SKB_PROG_ID": "generic", "IFLA_XDP_HW_PROG_ID": "offload"}


class _ProgInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16),
    ]


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
def libbpf() -> Any:
    """The system's libbpf (libbpf1), for the calls bcc does not make: tc hooks and filters, XDP replace."""
    name = ctypes.util.find_library("bpf")
    if name is None:
        raise DataPlaneError("libbpf not found: install libbpf1")
    return ctypes.CDLL(name, use_errno=True)


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
        code = libbpf().bpf_xdp_attach(ifindex, prog_fd, mode_flags | _XDP_FLAGS_REPLACE, ctypes.byref(opts))
    finally:
        os.close(old_fd)
    if code != 0:
        raise DataPlaneError(f"the kernel refused the swap: {os.strerror(-code)} (another program is attached?)")


class _MapInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
    ]


def maps_of(prog_id: int) -> dict[str, int]:
    """The program's maps by name (the kernel keeps 15 characters), as open fds (the caller closes them)."""
    fd = _prog_fd(prog_id)
    try:
        ids = (ctypes.c_uint32 * 64)()
        info = _ProgInfo(nr_map_ids=len(ids), map_ids=ctypes.addressof(ids))
        _info(fd, info)
        count = min(info.nr_map_ids, len(ids))
    finally:
        os.close(fd)
    maps: dict[str, int] = {}
    try:
        for map_id in ids[:count]:
            map_fd = int(_lib().bpf_map_get_fd_by_id(map_id))
            if map_fd < 0:
                continue
            map_info = _MapInfo()
            try:
                _info(map_fd, map_info)
            except DataPlaneError:
                os.close(map_fd)
                raise
            maps[map_info.name.decode()] = map_fd
    except DataPlaneError:
        for fd in maps.values():
            os.close(fd)
        raise
    return maps


def map_sizes(fd: int) -> tuple[int, int, int]:
    """(key size, value size, max entries) of the map ``fd``."""
    info = _MapInfo()
    _info(fd, info)
    return int(info.key_size), int(info.value_size), int(info.max_entries)


def read_raw(fd: int, key: bytes, size: int) -> bytes | None:
    """The value of ``key`` (``size`` bytes; a per-CPU map's are per CPU, each rounded up to 8), or None."""
    value = ctypes.create_string_buffer(size)
    if _lib().bpf_map_lookup_elem(fd, ctypes.c_char_p(key), value) != 0:
        return None
    return value.raw


def write_raw(fd: int, key: bytes, value: bytes) -> None:
    if _lib().bpf_map_update_elem(fd, ctypes.c_char_p(key), ctypes.c_char_p(value), 0) != 0:
        raise DataPlaneError(f"writing a map failed: {os.strerror(ctypes.get_errno() or 1)}")


def keys_of(fd: int, key_size: int) -> list[bytes]:
    """Every key of the hash map ``fd``."""
    found: list[bytes] = []
    current = ctypes.create_string_buffer(key_size)
    following = ctypes.create_string_buffer(key_size)
    previous = None
    for _ in range(1 << 20):  # bounded: a hash map holds far fewer
        if _lib().bpf_get_next_key(fd, previous, following) != 0:
            break
        found.append(following.raw)
        ctypes.memmove(current, following, key_size)
        previous = current
    return found


def read(fd: int, key: int, size: int) -> bytes:
    """The value of u32 ``key``; DataPlaneError if there is none."""
    value = read_raw(fd, key.to_bytes(4, "little"), size)
    if value is None:
        raise DataPlaneError("reading a map failed")
    return value


def percpu_values(fd: int, key: int, fields: int) -> list[int]:
    """The ``fields`` u64 fields of row ``key`` of a per-CPU array, summed over the CPUs."""
    cpus = possible_cpus()
    raw = read(fd, key, 8 * fields * cpus)
    words = [int.from_bytes(raw[i : i + 8], "little") for i in range(0, len(raw), 8)]
    return [sum(words[cpu * fields + field] for cpu in range(cpus)) for field in range(fields)]


@functools.cache
def possible_cpus() -> int:
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    return max(int(part.split("-")[-1]) for part in text.split(",")) + 1
