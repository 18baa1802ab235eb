"""Fixtures shared by the config tests: parse a YAML snippet, or collect the problems it has."""

import textwrap
from collections.abc import Callable

import pytest

import config

Load = Callable[..., config.XdplbConfig]
Problems = Callable[..., list[tuple[str, str]]]


def _load(text: str, *, source: str = "test.yaml") -> config.XdplbConfig:
    return config.parse_config(textwrap.dedent(text), source=source)


def _problems(text: str, *, source: str = "test.yaml") -> list[tuple[str, str]]:
    with pytest.raises(config.ConfigError) as caught:
        _load(text, source=source)
    return list(caught.value.problems)


@pytest.fixture
def load() -> Load:
    """``load(yaml_text)``: the validated config (the text is dedented)."""
    return _load


@pytest.fixture
def problems() -> Problems:
    """``problems(yaml_text)``: the (path, message) pairs of the ConfigError it raises; fails if none is raised."""
    return _problems
