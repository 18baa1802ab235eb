"""BPF_PROG_TEST_RUN through the raw bpf(2) syscall: bcc has no wrapper for it.

The kernel runs the real program on a copy of the given frame, against the real maps, and returns the verdict,
the frame as the program left it and the mean time per repetition. Repetitions run on the already rewritten
buffer (the kernel does not reset it between them).
"""

import ctypes
import ctypes.util
import os
import platform
from dataclasses import dataclass

__all__ = ["TestRun", "XdpVerdict", "prog_test_run"]

_BPF_PROG_TEST_RUN = 10
_BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
_SYSCALL_BPF = {"x86_64": 321, "aarch64": 280}
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class _TestAttr(ctypes.Structure):
    """``union bpf_attr``'s ``test`` member (include/uapi/linux/bpf.h)."""

    _fields_ = [
        ("prog_fd", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("data_in", ctypes.c_uint64),
        ("data_out", ctypes.c_uint64),
        ("repeat", ctypes.c_uint32),
        ("duration", ctypes.c_uint32),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_uint64),
        ("ctx_out", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


class _XdpMd(ctypes.Structure):
    """``struct xdp_md`` as BPF_PROG_TEST_RUN takes it for an XDP program's context."""

    _fields_ = [
        ("data", ctypes.c_uint32),
        ("data_end", ctypes.c_uint32),
        ("data_meta", ctypes.c_uint32),
        ("ingress_ifindex", ctypes.c_uint32),
        ("rx_queue_index", ctypes.c_uint32),
        ("egress_ifindex", ctypes.c_uint32),
    ]


class XdpVerdict:
    """XDP return codes by name."""

    ABORTED = 0
    DROP = 1
    PASS = 2
    TX = 3
    REDIRECT = 4
    NAMES = {0: "XDP_ABORTED", 1: "XDP_DROP", 2: "XDP_PASS", 3: "XDP_TX", 4: "XDP_REDIRECT"}


@dataclass(frozen=True)
class TestRun:
    """What one BPF_PROG_TEST_RUN returned."""

    retval: int
    data: bytes
    duration_ns: int

    @property
    def verdict(self) -> str:
        """The return code by name, e.g. ``XDP_TX``."""
        return XdpVerdict.NAMES.get(self.retval, str(self.retval))

    __test__ = False  # not a pytest class


def prog_test_run(prog_fd: int, data: bytes, *, repeat: int = 1, ingress_ifindex: int = 0,
                  live: bool = False) -> TestRun:
    """Run an XDP program on ``data`` ``repeat`` times; ``ingress_ifindex`` (0: loopback) must exist in this netns.

    ``live`` (BPF_F_TEST_XDP_LIVE_FRAMES): the verdict is carried out, so an XDP_TX or XDP_REDIRECT frame really
    leaves through its interface; the kernel then returns neither the frame nor the verdict (``data`` is empty,
    ``retval`` 0).
    """
    out = ctypes.create_string_buffer(len(data) + 256)  # room for a pushed VLAN tag
    inp = ctypes.create_string_buffer(data, len(data))
    attr = _TestAttr(
        prog_fd=prog_fd,
        data_size_in=len(data),
        data_size_out=0 if live else len(out),
        data_in=ctypes.addressof(inp),
        data_out=0 if live else ctypes.addressof(out),
        repeat=repeat,
        flags=_BPF_F_TEST_XDP_LIVE_FRAMES if live else 0,
    )
    ctx = None
    if ingress_ifindex:
        ctx = _XdpMd(data=0, data_end=len(data), ingress_ifindex=ingress_ifindex)
        attr.ctx_size_in = ctypes.sizeof(ctx)
        attr.ctx_in = ctypes.addressof(ctx)
    nr = _SYSCALL_BPF[platform.machine()]
    if _libc.syscall(nr, _BPF_PROG_TEST_RUN, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"BPF_PROG_TEST_RUN: {os.strerror(err)}")
    return TestRun(retval=attr.retval, data=out.raw[: attr.data_size_out], duration_ns=attr.duration)
