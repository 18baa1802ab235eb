import pytest

import bpf
from bpf._slab import SlabAllocator


def test_freed_holes_merge_and_are_reused_first_fit() -> None:
    slab = SlabAllocator(100)
    a, b, c = slab.allocate(30), slab.allocate(30), slab.allocate(30)
    assert (a.offset, b.offset, c.offset) == (0, 30, 60)
    with pytest.raises(bpf.DataPlaneError, match="slab full"):
        slab.allocate(20)
    slab.release(a)
    slab.release(b)
    merged = slab.allocate(60)
    assert (merged.offset, merged.size) == (0, 60), "two neighbouring holes make one"
    slab.release(c)
    assert slab.allocate(40).offset == 60
