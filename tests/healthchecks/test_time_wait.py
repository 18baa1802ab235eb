"""Checks close with a reset and leave no TIME_WAIT socket on the checker's side (``healthchecks._linger``).

Before, 20 of 20 HTTP checks and 50 of 50 TCP checks left one each: ``abort()`` sends a FIN here.
"""

import asyncio
from typing import Any

import pytest

import config
import healthchecks
from tests.healthchecks import hc_servers

LOOPBACK = hc_servers.LOOPBACK
TIMING = {"timeout": 0.5, "interval": 1}
RUNS = 20
_TIME_WAIT = "06"


def _time_wait_towards(port: int) -> set[tuple[str, str]]:
    """TIME_WAIT sockets whose remote port is ``port`` (local and remote address, as the kernel shows them): the
    checker's ends of connections to the server."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[3] == _TIME_WAIT and int(fields[2].rsplit(":", 1)[1], 16) == port:
                    found.add((fields[1], fields[2]))
    return found


async def _run(check: config.Check, port: int, engine: healthchecks.HttpEngine = "lean") -> None:
    # A server of an earlier test may have left TIME_WAIT sockets whose remote port this server now listens on.
    before = _time_wait_towards(port)
    for _ in range(RUNS):
        result = await healthchecks.probe(check, LOOPBACK, port, http_engine=engine)
        assert result.ok, result.reason
    assert _time_wait_towards(port) - before == set()


async def _answer_and_stay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A complete HTTP answer, then the connection is left open: the checker closes first."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    await writer.drain()
    await reader.read()


@pytest.mark.parametrize("fields", [{}, {"send": "PING\\r\\n"}], ids=["connect", "send"])
async def test_tcp_checks_leave_no_time_wait(raw_server: Any, fields: dict[str, str]) -> None:
    server = await raw_server(hc_servers.silent)
    await _run(config.TcpCheck.model_validate({"timing": TIMING, **fields}), server.port)


async def test_tcp_checks_with_a_reply_leave_no_time_wait(raw_server: Any) -> None:
    server = await raw_server(hc_servers.banner)
    await _run(config.TcpCheck.model_validate({"timing": TIMING, "expect": "+OK"}), server.port)


@pytest.mark.parametrize("engine", ["lean", "aiohttp"])
async def test_http_checks_leave_no_time_wait(raw_server: Any, engine: healthchecks.HttpEngine) -> None:
    server = await raw_server(_answer_and_stay)
    await _run(config.HttpCheck.model_validate({"timing": TIMING, "path": "/ok"}), server.port, engine)


@pytest.mark.parametrize("engine", ["lean", "aiohttp"])
async def test_http_checks_on_aiohttp_leave_no_time_wait(
    http_app: hc_servers.HttpApp, engine: healthchecks.HttpEngine
) -> None:
    await _run(config.HttpCheck.model_validate({"timing": TIMING, "path": "/ok"}), http_app.port, engine)
