"""The packet test harness: BPF_PROG_TEST_RUN through libbpf's ``bpf_prog_test_run_opts`` (ctypes), which bcc
does not wrap. Tests and benchmarks use it; the daemon never does (an import contract says so).

The kernel runs the real program on a copy of the given frame, against the real maps, and returns the verdict,
the frame as the program left it and the mean time per repetition. Repetitions run on the already rewritten
buffer (the kernel does not reset it between them).
"""

import ctypes
import ctypes.util
import functools
import os
from dataclasses import dataclass

__all__ = ["TestRun", "XdpVerdict", "prog_test_run"]

_BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1


class _TestRunOpts(ctypes.Structure):
    """libbpf's ``struct bpf_test_run_opts`` (bpf/bpf.h); ``sz`` tells libbpf which fields this caller knows."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


@functools.cache
def _libbpf() -> ctypes.CDLL:
    name = ctypes.util.find_library("bpf")
    if name is None:
        raise OSError("libbpf not found: install libbpf1 (BPF_PROG_TEST_RUN goes through it)")
    lib = ctypes.CDLL(name, use_errno=True)
    lib.bpf_prog_test_run_opts.argtypes = [ctypes.c_int, ctypes.POINTER(_TestRunOpts)]
    lib.bpf_prog_test_run_opts.restype = ctypes.c_int
    return lib


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


def prog_test_run(
    prog_fd: int, data: bytes, *, repeat: int = 1, ingress_ifindex: int = 0, live: bool = False
) -> TestRun:
    """Run an XDP program on ``data`` ``repeat`` times; ``ingress_ifindex`` (0: loopback) must exist in this netns.

    ``live`` (BPF_F_TEST_XDP_LIVE_FRAMES): the verdict is carried out, so an XDP_TX or XDP_REDIRECT frame really
    leaves through its interface; the kernel then returns neither the frame nor the verdict (``data`` is empty,
    ``retval`` 0).
    """
    out = ctypes.create_string_buffer(len(data) + 256)  # room for a pushed VLAN tag
    inp = ctypes.create_string_buffer(data, len(data))
    opts = _TestRunOpts(
        sz=ctypes.sizeof(_TestRunOpts),
        data_in=ctypes.addressof(inp),
        data_size_in=len(data),
        data_out=None if live else ctypes.addressof(out),
        data_size_out=0 if live else len(out),
        repeat=repeat,
        flags=_BPF_F_TEST_XDP_LIVE_FRAMES if live else 0,
    )
    ctx = None
    if ingress_ifindex:
        ctx = _XdpMd(data=0, data_end=len(data), ingress_ifindex=ingress_ifindex)
        opts.ctx_in = ctypes.addressof(ctx)
        opts.ctx_size_in = ctypes.sizeof(ctx)
    if _libbpf().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"BPF_PROG_TEST_RUN: {os.strerror(err)}")
    return TestRun(retval=opts.retval, data=out.raw[: opts.data_size_out], duration_ns=opts.duration)
