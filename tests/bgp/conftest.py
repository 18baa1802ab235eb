"""Fixtures for the BGP tests: a real BIRD 2 peer on loopback, and a speaker peering with it."""

from collections.abc import AsyncIterator, Iterator

import pytest

import bgp
from balancer.lab import bird_lab
from tests.bgp import bgp_support


@pytest.fixture
def bird() -> Iterator[bird_lab.BirdLab]:
    """A started BIRD with the two sessions of ``bgp_support.bird_peers``."""
    bgp_support.need_bird()
    with bird_lab.BirdLab(peers=bgp_support.bird_peers()) as lab:
        yield lab


@pytest.fixture
async def speaker(bird: bird_lab.BirdLab) -> AsyncIterator[bgp.Speaker]:
    """A started speaker whose sessions with ``bird`` are Established on both sides."""
    async with bgp.Speaker(bgp_support.speaker_config(bird), restart_delay=0.2) as running:
        await bgp_support.wait_for(lambda: bgp_support.established(running))
        await bgp_support.wait_for(lambda: bgp_support.bird_established(bird))
        yield running
