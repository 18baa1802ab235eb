"""Maglev table storage: ids, grace before reuse, and failures that leave the serving tables alone.

The map operations are the kernel's in the packet tests; here a stand-in that keeps maps in memory and can refuse
an operation the way the kernel does (ENOMEM), so every failure path runs without root.
"""

import errno
from collections.abc import Sequence

import pytest

import bpf
from bpf._tables import TableStore


class Maps:
    """Maps in memory; ``fail`` names the next operation to refuse."""

    def __init__(self) -> None:
        self.maps: dict[int, list[int]] = {}
        self.outer: dict[int, int] = {}  # table id -> map fd
        self.open: set[int] = set()
        self.fail: str | None = None
        self.installs = 0  # one at a time: each waits for an RCU grace period in the kernel
        self.batches = 0
        self.batch_limit: int | None = None
        self._next_fd = 100

    def _maybe_fail(self, operation: str) -> None:
        if self.fail == operation:
            self.fail = None
            raise OSError(errno.ENOMEM, "Cannot allocate memory")

    def create(self, entries: int) -> int:
        self._maybe_fail("create")
        self._next_fd += 1
        self.maps[self._next_fd] = [0] * entries
        self.open.add(self._next_fd)
        return self._next_fd

    def fill(self, fd: int, values: Sequence[int]) -> None:
        self._maybe_fail("fill")
        self.maps[fd][: len(values)] = values

    def install(self, table_id: int, fd: int) -> None:
        self._maybe_fail("install")
        self.installs += 1
        self.outer[table_id] = fd

    def install_many(self, pairs: Sequence[tuple[int, int]]) -> int:
        """One call for all, as the kernel's batch update; ``batch_limit`` makes it stop part way."""
        self._maybe_fail("install_many")
        self.batches += 1
        done = pairs[: self.batch_limit]
        for table_id, fd in done:
            self.outer[table_id] = fd
        return len(done)

    def uninstall(self, table_id: int) -> None:
        self.outer.pop(table_id, None)

    def read(self, table_id: int) -> list[int]:
        fd = self.outer.get(table_id)
        return [] if fd is None else list(self.maps[fd])

    def close(self, fd: int) -> None:
        self.open.discard(fd)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def store(capacity: int = 4) -> tuple[TableStore, Maps, Clock]:
    maps, clock = Maps(), Clock()
    return TableStore(maps, capacity, grace=1.0, clock=clock), maps, clock


def test_fills_to_its_capacity_then_refuses_with_a_clear_error() -> None:
    tables, maps, _ = store(capacity=4)
    ids = [tables.write([n] * 7) for n in range(4)]
    assert sorted(ids) == [0, 1, 2, 3] and tables.in_use == 4
    assert [tables.read(i) for i in ids] == [[n] * 7 for n in range(4)]
    with pytest.raises(bpf.DataPlaneError, match="no free Maglev table id"):
        tables.write([9] * 7)
    assert [tables.read(i) for i in ids] == [[n] * 7 for n in range(4)], "a refusal changes no table"
    assert not maps.open, "every fd is closed: the outer map holds the tables"


@pytest.mark.parametrize("step", ["create", "fill", "install"])
def test_a_failed_write_takes_no_id_and_leaves_the_live_table_serving(step: str) -> None:
    tables, maps, _ = store()
    live = tables.write([1, 2, 1])
    maps.fail = step
    with pytest.raises(bpf.DataPlaneError, match="Cannot allocate memory"):
        tables.write([2, 2, 2])
    assert tables.read(live) == [1, 2, 1]
    assert tables.in_use == 1
    assert not maps.open, "a failed write leaks no fd"
    assert tables.write([2, 2, 2]) != live, "the next write works"


def test_a_replaced_table_stays_readable_for_the_grace_then_its_id_is_reused() -> None:
    tables, _, clock = store(capacity=2)
    old = tables.write([1] * 5)
    new = tables.write([2] * 5)
    tables.retire(old)
    clock.now = 0.5
    tables.release_due()
    assert tables.read(old) == [1] * 5, "a packet that read the old service entry still finds its table"
    clock.now = 1.5
    reused = tables.write([3] * 5)
    assert reused == old and tables.read(reused) == [3] * 5
    assert tables.read(new) == [2] * 5


def test_when_every_id_is_taken_retired_tables_are_released_early_rather_than_failing() -> None:
    tables, _, _ = store(capacity=2)
    first = tables.write([1])
    tables.write([2])
    tables.retire(first)
    assert tables.write([3]) == first


def test_reserved_tables_are_installed_in_one_call_and_the_writes_install_nothing_more() -> None:
    tables, maps, _ = store(capacity=8)
    tables.reserve([5, 5, 5, 7])
    assert (maps.batches, tables.reserved, tables.in_use) == (1, 4, 4)
    ids = [tables.write([n] * 5) for n in range(3)] + [tables.write([9] * 7)]
    assert maps.installs == 0, "every write went into a reserved table"
    assert [tables.read(i) for i in ids] == [[0] * 5, [1] * 5, [2] * 5, [9] * 7]
    assert tables.reserved == 0 and not maps.open
    tables.write([4] * 5)
    assert maps.installs == 1, "without a reservation a write installs its own"


def test_a_reservation_that_fails_part_way_keeps_what_went_in_and_frees_the_rest() -> None:
    tables, maps, _ = store(capacity=8)
    maps.batch_limit = 2
    tables.reserve([5, 5, 5])
    assert (tables.reserved, tables.in_use) == (2, 2)
    assert len(maps.open) == 2, "the maps that did not go in are closed"
    maps.fail = "install_many"
    tables.reserve([7, 7])
    assert (tables.reserved, tables.in_use, len(maps.open)) == (2, 2, 2), "a refused batch changes nothing"
    maps.fail = "create"
    tables.reserve([9])
    assert tables.in_use == 2


def test_a_reserved_table_that_cannot_be_filled_gives_its_id_back_and_the_live_ones_serve_on() -> None:
    tables, maps, _ = store(capacity=4)
    live = tables.write([1, 1, 1])
    tables.reserve([3])
    maps.fail = "fill"
    with pytest.raises(bpf.DataPlaneError, match="Cannot allocate memory"):
        tables.write([2, 2, 2])
    assert tables.read(live) == [1, 1, 1]
    assert (tables.in_use, tables.reserved, len(maps.open)) == (1, 0, 0)


def test_reserved_tables_of_another_size_give_way_when_every_id_is_taken() -> None:
    tables, maps, _ = store(capacity=3)
    tables.write([1] * 5)
    tables.reserve([7, 7])
    assert tables.in_use == 3
    assert tables.read(tables.write([2] * 5)) == [2] * 5, "a write of another size still finds an id"
    assert tables.reserved == 0 and not maps.open
    tables.reserve([9])
    tables.close()
    assert not maps.open, "close releases the reserved tables' fds"


def test_the_data_plane_keeps_a_service_whole_when_its_table_cannot_be_written() -> None:
    """Through DataPlane.set_service: the failed update leaves the old table, slots and status in force."""
    from tests.bpf.conftest import require_bpf
    from tests.bpf import world

    require_bpf()
    maps = Maps()
    plane = bpf.DataPlane(world.SETTINGS, table_ops=maps)
    plane.setup()
    try:
        plane.set_interface_mac(world.INGRESS_IFINDEX, world.LB_MAC)
        one = world.service(world.VIP4, 80, "tcp", world.B1.backend(), world.B2.backend())
        before = plane.set_service(one)
        maps.fail = "fill"
        with pytest.raises(bpf.DataPlaneError):
            plane.set_service(world.service(world.VIP4, 80, "tcp", world.B2.backend()))
        assert plane.services[one.key] == before, "the status still describes what serves"
        slots = {b.slot for b in before.backends}
        backends = plane.table("backends")
        assert all(backends[backends.Key(slot)].flags for slot in slots), "no slot the live table uses was retired"

        # a service that fails to be added is not left half there
        maps.fail = "create"
        two = world.service(world.VIP4, 81, "tcp", world.B1.backend())
        with pytest.raises(bpf.DataPlaneError):
            plane.set_service(two)
        assert two.key not in plane.services
        assert plane.set_service(two).table_size == world.TABLE_SIZE, "and can be added once the kernel allows"
    finally:
        plane.cleanup()


def test_the_kernel_takes_reserved_tables_in_one_batch_and_services_are_written_into_them() -> None:
    from tests.bpf import world
    from tests.bpf.conftest import require_bpf

    require_bpf()
    plane = bpf.DataPlane(world.SETTINGS)
    plane.setup()
    try:
        plane.set_interface_mac(world.INGRESS_IFINDEX, world.LB_MAC)
        services = [world.service(world.VIP4, port, "tcp", world.B1.backend(), world.B2.backend()) for port in (80, 81)]
        plane.reserve_tables(services)
        store = plane._table_store()
        assert store.reserved == 2
        for service in services:
            plane.set_service(service)
        assert store.reserved == 0
        for service in services:
            table = plane.read_table(service.key)
            assert len(table) == world.TABLE_SIZE and set(table) == {world.B1.address, world.B2.address}
    finally:
        plane.cleanup()
