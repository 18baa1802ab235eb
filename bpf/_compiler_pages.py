"""Giving back the compiler's pages after a compile: LLVM's and clang's code (about 80 MB here) stays resident in
the process though nothing runs it until the next compile.

``MADV_PAGEOUT`` (Linux 5.4) asks the kernel to reclaim them now. They are clean pages of the library files, so
nothing they hold changes: a later compile reads them again from the page cache or the disk. Any mapping may be
advised (the advice never alters contents), so data pages are safe too; the kernel keeps what it cannot reclaim.
"""

import ctypes
import logging
from pathlib import Path

__all__ = ["COMPILER_LIBRARIES", "compiler_mappings", "release"]

log = logging.getLogger(__name__)

COMPILER_LIBRARIES = ("libLLVM", "libclang")
"""File names that mark the compiler's libraries among a process's mappings."""

_MADV_PAGEOUT = 21


def compiler_mappings(maps: Path = Path("/proc/self/maps")) -> list[tuple[int, int]]:
    """(start, end) of each mapping of a compiler library in ``maps``."""
    found = []
    for line in maps.read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and any(name in Path(fields[5]).name for name in COMPILER_LIBRARIES):
            start, end = (int(bound, 16) for bound in fields[0].split("-"))
            found.append((start, end))
    return found


def release() -> int:
    """Ask the kernel to reclaim the compiler's resident pages; the bytes of the mappings advised (0 where the
    kernel cannot: before 5.4, or without libc)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    advised = 0
    for start, end in compiler_mappings():
        if madvise(start, end - start, _MADV_PAGEOUT) == 0:
            advised += end - start
        else:
            log.debug("event=compiler_pages_kept errno=%d", ctypes.get_errno())
            return advised  # EINVAL: a kernel without MADV_PAGEOUT; the pages stay, as they did before
    return advised
