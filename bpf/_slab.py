"""Space for Maglev tables in the shared ``maglev_slab`` map: first-fit allocation with merging of free holes."""

from dataclasses import dataclass

from bpf.errors import DataPlaneError

__all__ = ["Region", "SlabAllocator"]


@dataclass
class Region:
    """``size`` entries from ``offset``."""

    offset: int
    size: int


class SlabAllocator:
    """First-fit allocation of Maglev tables in the shared slab."""

    def __init__(self, size: int) -> None:
        self._free = [Region(0, size)]

    def allocate(self, size: int) -> Region:
        for index, hole in enumerate(self._free):
            if hole.size >= size:
                region = Region(hole.offset, size)
                hole.offset += size
                hole.size -= size
                if hole.size == 0:
                    del self._free[index]
                return region
        raise DataPlaneError(f"Maglev slab full: no room for a table of {size} entries (raise maglev_slab_size)")

    def release(self, region: Region) -> None:
        self._free.append(Region(region.offset, region.size))
        self._free.sort(key=lambda hole: hole.offset)
        merged: list[Region] = []
        for hole in self._free:
            if merged and merged[-1].offset + merged[-1].size == hole.offset:
                merged[-1].size += hole.size
            else:
                merged.append(hole)
        self._free = merged
