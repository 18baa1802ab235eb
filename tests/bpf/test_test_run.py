"""The BPF_PROG_TEST_RUN wrapper on its own: what it hands libbpf, and the kernel's refusal as an OSError."""

import ctypes
import errno

import pytest

from bpf import testing


def test_the_options_struct_has_libbpfs_layout() -> None:
    # struct bpf_test_run_opts of libbpf 1.x on a 64-bit machine: size_t, three pointers, u32s, batch_size last.
    assert ctypes.sizeof(testing._TestRunOpts) == 80
    assert testing._TestRunOpts.retval.offset == 56 and testing._TestRunOpts.batch_size.offset == 76


def test_a_refused_run_is_an_os_error_with_the_kernels_reason() -> None:
    with pytest.raises(OSError) as error:
        testing.prog_test_run(-1, b"\x00" * 64)  # no such program
    assert error.value.errno in (errno.EBADF, errno.EPERM) and "BPF_PROG_TEST_RUN" in str(error.value)
