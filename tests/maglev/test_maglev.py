"""Maglev table properties, and the production builder held equal to the plain reference."""

import hashlib
import os
from array import array
from collections.abc import Iterator
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import config
from bpf import maglev, maglev_table
from tests.reference import maglev as reference

PRIMES = [p for p in range(101, 2000) if config.is_prime(p)]


def names(n: int) -> list[str]:
    return [f"198.18.{i // 256}.{i % 256}" for i in range(n)]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), size=st.sampled_from(PRIMES))
def test_equal_weights_differ_by_at_most_one_slot(n: int, size: int) -> None:
    table = maglev_table([(name, 1) for name in names(n)], size)
    counts = [table.count(i) for i in range(n)]
    assert max(counts) - min(counts) <= 1
    assert len(table) == size


@settings(max_examples=60, deadline=None)
@given(weights=st.lists(st.integers(0, 20), min_size=1, max_size=12), size=st.sampled_from(PRIMES))
def test_weights_are_honoured_in_proportion(weights: list[int], size: int) -> None:
    backends = list(zip(names(len(weights)), weights))
    table = maglev_table(backends, size)
    total = sum(weights)
    if total == 0:
        assert table == []
        return
    for index, weight in enumerate(weights):
        share = size * weight / total
        # Each round places every weight once; only the last, partial round can be off, by at most a weight.
        assert abs(table.count(index) - share) <= weight + 1, (index, weight, table.count(index), share)


@pytest.fixture(params=["native", "python"])
def fill(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test with this fixture runs with the C fill loop and with the Python one."""
    native = maglev._maglev_fill
    if request.param == "native" and native is None:
        if os.environ.get("CI") == "true":
            pytest.fail("bpf._maglev_fill is not built: is gcc or python3-dev missing?")
        pytest.skip("bpf._maglev_fill is not built")
    if request.param == "python":
        maglev._maglev_fill = None
    yield request.param
    maglev._maglev_fill = native


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(weights=st.lists(st.integers(0, 6), min_size=1, max_size=8), size=st.sampled_from(PRIMES[:40]))
def test_production_table_equals_the_reference(fill: str, weights: list[int], size: int) -> None:
    backends = list(zip(names(len(weights)), weights))
    assert maglev_table(backends, size) == reference.build(backends, size)


@settings(max_examples=40, deadline=None)
@given(weights=st.lists(st.integers(0, 300), min_size=1, max_size=40), size=st.sampled_from([7, *PRIMES, 16381]))
def test_the_c_loop_builds_the_python_loops_table(weights: list[int], size: int) -> None:
    if maglev._maglev_fill is None:
        pytest.fail("bpf._maglev_fill is not built") if os.environ.get("CI") == "true" else pytest.skip("not built")
    backends = list(zip(names(len(weights)), weights))
    native = maglev_table(backends, size)
    python, maglev._maglev_fill = maglev._maglev_fill, None
    try:
        assert maglev_table(backends, size) == native
    finally:
        maglev._maglev_fill = python


def _native() -> ModuleType:
    """The C module, built; the test fails under CI and is skipped elsewhere when it is not."""
    native = maglev._maglev_fill
    if native is None:
        if os.environ.get("CI") == "true":
            pytest.fail("bpf._maglev_fill is not built")
        pytest.skip("not built")
    return native


def test_the_c_loop_refuses_walkers_out_of_range() -> None:
    fill = _native()
    assert list(array("H", fill.fill(array("q", [0, 1, 3, 2]), 7))) == [0] * 7
    for walker in ([0, 1, 7, 2], [0, 1, 0, 7], [0, 1, 0, 0], [0, 0, 0, 1], [-1, 1, 0, 1], [65536, 1, 0, 1]):
        with pytest.raises(ValueError, match="out of range"):
            fill.fill(array("q", walker), 7)
    for walkers, size in ((array("q", [0, 1, 0]), 7), (array("q"), 7), (array("i", [0, 1, 0, 1]), 7),
                          (array("q", [0, 1, 0, 1]), 0)):  # fmt: skip
        with pytest.raises(ValueError, match="four per backend"):
            fill.fill(walkers, size)


@pytest.mark.parametrize("n", [3, 10, 50, 100])
def test_removing_one_backend_moves_little_else(n: int) -> None:
    """Measured churn beyond the removed backend's own slots, table 16381: 0.08% (n=3) to 1.42% (n=100)."""
    size = 16381
    before_names = names(n)
    before = [before_names[i] for i in maglev_table([(x, 1) for x in before_names], size)]
    for removed in before_names[: min(n, 5)]:
        rest = [x for x in before_names if x != removed]
        after = [rest[i] for i in maglev_table([(x, 1) for x in rest], size)]
        moved = sum(1 for old, new in zip(before, after) if old != new and old != removed)
        assert moved / size <= 0.02, f"{moved} of {size} slots moved needlessly when {removed} left"
        assert all(new != removed for new in after)


def test_weights_scale_by_their_common_divisor() -> None:
    assert maglev_table([("a", 100), ("b", 200)], 101) == maglev_table([("a", 1), ("b", 2)], 101)


def test_bad_input_is_refused(fill: str) -> None:
    with pytest.raises(ValueError, match="not prime"):
        maglev_table([("a", 1)], 100)
    with pytest.raises(ValueError, match="unique"):
        maglev_table([("a", 1), ("a", 1)], 101)
    with pytest.raises(ValueError, match="negative"):
        maglev_table([("a", -1)], 101)
    with pytest.raises(ValueError, match="65,536"):
        maglev_table([(str(i), 1) for i in range(65537)], 65537)
    assert maglev_table([("a", 0)], 101) == []


def test_tables_are_pinned_across_versions(fill: str) -> None:
    """Nodes of different versions must pick the same backend for a flow: a change to the permutation, even made
    in both the production builder and the reference, changes these and fails here."""
    small = [("198.18.0.11", 1), ("198.18.0.12", 2), ("198.18.0.13", 1)]
    assert maglev_table(small, 13) == [1, 0, 2, 1, 0, 1, 2, 0, 1, 1, 0, 2, 1]
    big = maglev_table([(f"198.18.0.{i}", 1 + i % 3) for i in range(10)], 16381)
    assert hashlib.sha256(bytes(big)).hexdigest() == "ffa4cbc10b3d4d58a0ba71bca4eb812ef4b5dae45440ca002b8a39e7a5f422db"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(weights=st.lists(st.integers(1, 6), min_size=1, max_size=8), size=st.sampled_from(PRIMES[:40]))
def test_a_placed_table_holds_each_backends_slot_and_counts_its_entries(
    fill: str, weights: list[int], size: int
) -> None:
    table = maglev._table(list(zip(names(len(weights)), weights)), size)
    slots = [1000 + 7 * index for index in range(len(weights))]  # any u32s
    placed, counts = maglev.place(table, slots)
    assert placed.typecode == "Q" and placed.itemsize == 8, "the kernel's layout: values 8 bytes apart"
    assert list(placed) == [slots[index] for index in table]
    assert counts == [list(table).count(index) for index in range(len(weights))]


def test_placing_refuses_an_entry_without_a_slot() -> None:
    with pytest.raises(ValueError, match="no slot"):
        _native().place(array("H", [0, 2]), array("I", [5, 6]))
