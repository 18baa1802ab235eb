import asyncio
import pathlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import uvloop

from tests.healthchecks import hc_servers


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every async test here runs on the default loop and on uvloop: their transports differ in small ways."""
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    return hc_servers.make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
async def http_app() -> AsyncIterator[hc_servers.HttpApp]:
    app = await hc_servers.HttpApp().start()
    yield app
    await app.close()


@pytest.fixture
async def https_app(certs: dict[str, pathlib.Path]) -> AsyncIterator[hc_servers.HttpApp]:
    app = await hc_servers.HttpApp().start(hc_servers.server_context(certs, "good"))
    yield app
    await app.close()


@pytest.fixture
async def expired_app(certs: dict[str, pathlib.Path]) -> AsyncIterator[hc_servers.HttpApp]:
    app = await hc_servers.HttpApp().start(hc_servers.server_context(certs, "expired"))
    yield app
    await app.close()


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[..., object]]:
    """Start raw servers with a given behaviour; all closed at the end."""
    servers: list[hc_servers.RawServer] = []

    async def start(behaviour: Callable[..., object]) -> hc_servers.RawServer:
        server = await hc_servers.RawServer(behaviour).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def dns() -> AsyncIterator[hc_servers.DnsResponder]:
    responder = await hc_servers.DnsResponder().start()
    yield responder
    await responder.close()


@pytest.fixture
async def flip_server(raw_server: Any) -> Any:
    """An HTTP server whose answer the test sets: ``server.status = 503``."""
    holder: dict[str, Any] = {}
    server = await raw_server(hc_servers.http_status(lambda: holder["server"].status))
    server.status = 200
    holder["server"] = server
    return server
