"""The lab's XDP_PASS program: what a veth *peer* needs so native XDP_TX and XDP_REDIRECT out of a veth work.

On veth, a frame sent by native XDP (XDP_TX, or XDP_REDIRECT into it) is handed to the peer's XDP receive path;
without a program there the kernel drops it (field notes). Two instructions (``r0 = XDP_PASS; exit``) loaded with
the raw ``bpf(2)`` syscall: no compiler, a millisecond. Attached with netlink in native mode; the program lives as
long as the interface holds it (the fd is closed at once), so removing the lab's namespaces removes it.
"""

import ctypes
import ctypes.util
import os
import platform
import struct
from typing import Any

__all__ = ["attach_pass", "load_pass"]

_BPF_PROG_LOAD = 5
_BPF_PROG_TYPE_XDP = 6
_XDP_PASS = 2
_XDP_FLAGS_DRV_MODE = 1 << 2
_SYSCALL_BPF = {"x86_64": 321, "aarch64": 280}
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
# struct bpf_insn {u8 code; u8 dst:4, src:4; s16 off; s32 imm}: mov64 r0, XDP_PASS (0xb7); exit (0x95)
_INSNS = struct.pack("<BBhi", 0xB7, 0, 0, _XDP_PASS) + struct.pack("<BBhi", 0x95, 0, 0, 0)
_LICENSE = b"GPL\0"


class _ProgLoad(ctypes.Structure):
    """The ``BPF_PROG_LOAD`` part of ``union bpf_attr`` (include/uapi/linux/bpf.h), up to ``prog_name``."""

    _fields_ = [
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * 16),
    ]


def load_pass() -> int:
    """Load the XDP_PASS program; returns its fd (the caller closes it)."""
    insns = ctypes.create_string_buffer(_INSNS, len(_INSNS))
    license_ = ctypes.create_string_buffer(_LICENSE, len(_LICENSE))
    attr = _ProgLoad(
        prog_type=_BPF_PROG_TYPE_XDP,
        insn_cnt=len(_INSNS) // 8,
        insns=ctypes.addressof(insns),
        license=ctypes.addressof(license_),
        prog_name=b"xdplb_lab_pass",
    )
    fd = int(_libc.syscall(_SYSCALL_BPF[platform.machine()], _BPF_PROG_LOAD, ctypes.byref(attr), ctypes.sizeof(attr)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"BPF_PROG_LOAD (XDP_PASS): {os.strerror(err)}")
    return fd


def attach_pass(ipr: Any, index: int) -> None:
    """Attach the XDP_PASS program in native mode to interface ``index`` of ``ipr``'s namespace."""
    fd = load_pass()
    try:
        ipr.link("set", index=index, xdp={"attrs": [("IFLA_XDP_FD", fd), ("IFLA_XDP_FLAGS", _XDP_FLAGS_DRV_MODE)]})
    finally:
        os.close(fd)
