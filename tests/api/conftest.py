"""Fixtures: a fake controller served by the real API on loopback, and an HTTP client."""

import asyncio
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
import uvloop

from tests.api import serving
from tests.api.fake_controller import FakeController


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The API runs on uvloop in the daemon (``xdplb run``), whose transports are not asyncio's classes: every
    test runs on both loops, but the long flood, which is about descriptors, not the loop."""
    if "two_thousand" in item.name:
        return {"asyncio": asyncio.new_event_loop}
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture
def controller() -> FakeController:
    return FakeController()


@pytest.fixture
async def base_url(controller: FakeController) -> AsyncIterator[str]:
    async with serving.serve(controller) as (url, _):
        yield url


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session
