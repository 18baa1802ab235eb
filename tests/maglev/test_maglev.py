"""Maglev table properties, and the production builder held equal to the plain reference."""

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import config
from bpf import maglev_table
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


@settings(max_examples=25, deadline=None)
@given(weights=st.lists(st.integers(0, 6), min_size=1, max_size=8), size=st.sampled_from(PRIMES[:40]))
def test_production_table_equals_the_reference(weights: list[int], size: int) -> None:
    backends = list(zip(names(len(weights)), weights))
    assert maglev_table(backends, size) == reference.build(backends, size)


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


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="not prime"):
        maglev_table([("a", 1)], 100)
    with pytest.raises(ValueError, match="unique"):
        maglev_table([("a", 1), ("a", 1)], 101)
    with pytest.raises(ValueError, match="negative"):
        maglev_table([("a", -1)], 101)


def test_tables_are_pinned_across_versions() -> None:
    """Nodes of different versions must pick the same backend for a flow: a change to the permutation, even made
    in both the production builder and the reference, changes these and fails here."""
    small = [("198.18.0.11", 1), ("198.18.0.12", 2), ("198.18.0.13", 1)]
    assert maglev_table(small, 13) == [1, 0, 2, 1, 0, 1, 2, 0, 1, 1, 0, 2, 1]
    big = maglev_table([(f"198.18.0.{i}", 1 + i % 3) for i in range(10)], 16381)
    assert hashlib.sha256(bytes(big)).hexdigest() == "ffa4cbc10b3d4d58a0ba71bca4eb812ef4b5dae45440ca002b8a39e7a5f422db"
