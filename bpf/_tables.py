"""Maglev tables in the kernel: one array map per table, found by the program through ``maglev_tables``.

A table is written whole into a map of its own before any service entry points at it, so readers only ever see
complete tables; replacing a service's table is then one update of its service entry. The table it replaced
keeps its id (and so stays readable) for ``grace`` seconds, far longer than any packet holds a service entry,
and is released after. There are two ids per service, so a service can always have its live table and the one
being replaced: a config that fits ``max_services`` can never run out of table ids, and memory is the sum of
the live tables (8 bytes per entry: the kernel rounds an array's values up to 8 bytes) plus the ones being
replaced.

Putting a map into ``maglev_tables`` waits for an RCU grace period in the kernel (8 ms here), one update at a time.
So a caller about to write many tables ``reserve``s them first: empty maps made and put under free ids in one
batch, one wait for all, which each ``write`` then fills. A reserved id points at an empty map no service entry
names, so filling it in place is as safe for readers as installing it.

Creating or filling a table can fail (out of memory); then nothing that readers see has changed.
"""

import array
import ctypes
import errno
import mmap
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from bpf.errors import DataPlaneError

__all__ = ["KernelMaps", "MapOps", "TableStore"]

_BPF_MAP_TYPE_ARRAY = 2
_BPF_F_INNER_MAP = 1 << 12  # as on the template: the kernel wants equal flags, and then allows any size
_BPF_F_MMAPABLE = 1 << 10  # as on the template: tables are written through mmap
_ELEMENT = "Q"  # an array map's values sit 8 bytes apart (round_up(value_size, 8)), as the mmap shows them


class MapOps(Protocol):
    """The map operations the store needs: the kernel's, or a test's that can fail on purpose."""

    def create(self, entries: int) -> int:
        """A new array map of ``entries`` u32 values; its fd. OSError if the kernel refuses."""

    def fill(self, fd: int, values: Sequence[int]) -> None:
        """Write ``values`` at indexes 0.. of the map ``fd``. OSError if the kernel refuses."""

    def install(self, table_id: int, fd: int) -> None:
        """Point ``maglev_tables[table_id]`` at the map ``fd``. OSError if the kernel refuses."""

    def install_many(self, pairs: Sequence[tuple[int, int]]) -> int:
        """``install`` each (table id, fd) in order, in as few kernel calls as it can; how many went in. OSError
        if the first cannot."""

    def uninstall(self, table_id: int) -> None:
        """Empty ``maglev_tables[table_id]``; the kernel frees the map once no reader holds it."""

    def read(self, table_id: int) -> list[int]:
        """The values of the table at ``table_id`` ([] if none)."""

    def close(self, fd: int) -> None:
        """Release our reference to a map (the outer map keeps its own)."""


class TableStore:
    """Allocates table ids, writes tables and releases replaced ones after ``grace`` seconds."""

    def __init__(
        self, ops: MapOps, capacity: int, *, grace: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ops = ops
        self._free = deque(range(capacity))
        self._retired: deque[tuple[float, int]] = deque()  # (when, table id), oldest first
        self._reserved: dict[int, list[tuple[int, int]]] = {}  # entries -> [(table id, fd of its empty map)]
        self._grace = grace
        self._clock = clock
        self.capacity = capacity

    @property
    def in_use(self) -> int:
        """Table ids taken, live, retired or reserved."""
        return self.capacity - len(self._free)

    @property
    def reserved(self) -> int:
        """Empty tables installed ahead of ``write``s."""
        return sum(len(tables) for tables in self._reserved.values())

    def reserve(self, sizes: Sequence[int]) -> None:
        """Install an empty table for each of ``sizes`` (entries) that no reserved one covers yet, all in one
        kernel call: the writes that follow then wait for no grace period each. Best effort: what cannot be
        reserved is written the slow way later."""
        self.release_due()
        wanted: dict[int, int] = {}
        for size in sizes:
            wanted[size] = wanted.get(size, 0) + 1
        made: list[tuple[int, int, int]] = []  # (entries, table id, fd)
        missing = [size for size, count in wanted.items() for _ in range(count - len(self._reserved.get(size, ())))]
        for size in missing[: len(self._free)]:
            table_id = self._free.popleft()
            try:
                made.append((size, table_id, self._ops.create(size)))
            except OSError:  # out of memory for more: reserve what was made
                self._free.appendleft(table_id)
                break
        installed = 0
        try:
            installed = self._ops.install_many([(table_id, fd) for _, table_id, fd in made])
        except OSError:
            pass
        for index, (size, table_id, fd) in enumerate(made):
            if index < installed:
                self._reserved.setdefault(size, []).append((table_id, fd))
            else:
                self._ops.close(fd)
                self._free.appendleft(table_id)

    def write(self, table: Sequence[int]) -> int:
        """Write ``table`` into a new map under a free id, and return the id. DataPlaneError if it cannot be done.

        On failure no id is taken and nothing a reader sees has changed.
        """
        spare = self._take_reserved(len(table))
        if spare is not None:
            table_id, fd = spare
            try:
                self._ops.fill(fd, table)
            except OSError as error:
                self._ops.uninstall(table_id)
                self._free.appendleft(table_id)
                raise DataPlaneError(f"writing a Maglev table of {len(table)} entries failed: {error}") from error
            finally:
                self._ops.close(fd)
            return table_id
        self.release_due()
        if not self._free:
            self.release_due(force=True)
            self._drop_reserved()
        if not self._free:
            raise DataPlaneError(f"no free Maglev table id ({self.capacity} in use)")
        table_id = self._free.popleft()
        fd = -1
        try:
            fd = self._ops.create(len(table))
            self._ops.fill(fd, table)
            self._ops.install(table_id, fd)
        except OSError as error:
            self._free.appendleft(table_id)
            raise DataPlaneError(f"writing a Maglev table of {len(table)} entries failed: {error}") from error
        finally:
            if fd >= 0:
                self._ops.close(fd)
        return table_id

    def _take_reserved(self, entries: int) -> tuple[int, int] | None:
        tables = self._reserved.get(entries)
        if not tables:
            return None
        spare = tables.pop()
        if not tables:
            del self._reserved[entries]
        return spare

    def _drop_reserved(self) -> None:
        """Give reserved tables' ids back (they were of other sizes than the write that needs an id)."""
        for tables in self._reserved.values():
            for table_id, fd in tables:
                self._ops.uninstall(table_id)
                self._ops.close(fd)
                self._free.append(table_id)
        self._reserved.clear()

    def close(self) -> None:
        """Release the reserved tables' fds (their maps go with the outer map)."""
        for tables in self._reserved.values():
            for _, fd in tables:
                self._ops.close(fd)
        self._reserved.clear()

    def retire(self, table_id: int) -> None:
        """No service points at ``table_id`` any more; free it once packets that read the old entry are done."""
        self._retired.append((self._clock(), table_id))

    def release_due(self, *, force: bool = False) -> None:
        """Free retired tables older than the grace (all of them with ``force``)."""
        now = self._clock()
        while self._retired and (force or now - self._retired[0][0] >= self._grace):
            _, table_id = self._retired.popleft()
            self._ops.uninstall(table_id)
            self._free.append(table_id)

    def read(self, table_id: int) -> list[int]:
        """The table under ``table_id`` as the program reads it."""
        return self._ops.read(table_id)


class KernelMaps:
    """``MapOps`` on real maps through libbcc; ``outer`` is the bcc table of ``maglev_tables``."""

    def __init__(self, outer: object) -> None:
        from bcc.libbcc import lib  # Debian's python3-bpfcc: only where BPF runs

        self._lib = lib
        self._outer = outer
        lib.bcc_create_map.restype = ctypes.c_int
        lib.bcc_create_map.argtypes = [ctypes.c_int, ctypes.c_char_p] + [ctypes.c_int] * 4
        self._libbpf = ctypes.CDLL("libbpf.so.1", use_errno=True)
        self._libbpf.bpf_map_get_fd_by_id.restype = ctypes.c_int
        self._libbpf.bpf_map_get_fd_by_id.argtypes = [ctypes.c_uint32]

    def create(self, entries: int) -> int:
        flags = _BPF_F_INNER_MAP | _BPF_F_MMAPABLE
        fd = int(self._lib.bcc_create_map(_BPF_MAP_TYPE_ARRAY, b"maglev_table", 4, 4, entries, flags))
        if fd < 0:
            raise OSError(-fd, os.strerror(-fd))
        return fd

    def fill(self, fd: int, values: Sequence[int]) -> None:
        # maglev.place gives tables in this layout already: converting 16,381 entries again would cost a millisecond.
        data = (
            values if isinstance(values, array.array) and values.typecode == _ELEMENT else array.array(_ELEMENT, values)
        )
        with mmap.mmap(fd, len(data) * data.itemsize, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as memory:
            memory[:] = memoryview(data).cast("B")

    def install(self, table_id: int, fd: int) -> None:
        key, value = ctypes.c_uint32(table_id), ctypes.c_uint32(fd)
        if self._lib.bpf_update_elem(self._fd, ctypes.byref(key), ctypes.byref(value), 0) < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    def install_many(self, pairs: Sequence[tuple[int, int]]) -> int:
        if not pairs:
            return 0
        count = len(pairs)
        keys = (ctypes.c_uint32 * count)(*(table_id for table_id, _ in pairs))
        values = (ctypes.c_uint32 * count)(*(fd for _, fd in pairs))
        done = ctypes.c_uint32(count)
        if self._lib.bpf_update_batch(self._fd, keys, values, ctypes.byref(done)) == 0:
            return count
        # No batch updates for this map type on this kernel, or one failed: the rest one at a time.
        installed = 0 if ctypes.get_errno() in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, 524) else done.value
        for table_id, fd in pairs[installed:]:
            try:
                self.install(table_id, fd)
            except OSError:
                if installed == 0:
                    raise
                break
            installed += 1
        return installed

    def uninstall(self, table_id: int) -> None:
        key = ctypes.c_uint32(table_id)
        self._lib.bpf_delete_elem(self._fd, ctypes.byref(key))

    def read(self, table_id: int) -> list[int]:
        key, map_id = ctypes.c_uint32(table_id), ctypes.c_uint32()
        if self._lib.bpf_lookup_elem(self._fd, ctypes.byref(key), ctypes.byref(map_id)) < 0:
            return []
        fd = self._libbpf.bpf_map_get_fd_by_id(map_id.value)
        if fd < 0:
            return []
        try:
            values = []
            value = ctypes.c_uint32()
            index = ctypes.c_uint32(0)
            while self._lib.bpf_lookup_elem(fd, ctypes.byref(index), ctypes.byref(value)) == 0:
                values.append(value.value)
                index.value += 1
            return values
        finally:
            os.close(fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    @property
    def _fd(self) -> int:
        return int(self._outer.map_fd)  # type: ignore[attr-defined]
