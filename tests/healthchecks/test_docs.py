"""The examples in the health-check docstrings run and show what they claim."""

import doctest
import importlib

import pytest

MODULES = ["healthchecks._health", "healthchecks._clock", "healthchecks._rise_fall", "healthchecks._failure",
           "healthchecks._check_tcp"]  # fmt: skip


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_public_surface_is_exactly_all() -> None:
    import healthchecks

    public = {name for name in vars(healthchecks) if not name.startswith("_")}
    assert public == set(healthchecks.__all__)
