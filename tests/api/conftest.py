"""Fixtures: a fake controller served by the real API on loopback, and an HTTP client."""

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.api import serving
from tests.api.fake_controller import FakeController


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
