"""The API under connection abuse: idle and half-sent connections are closed, connections are capped below the
open-file limit less a reserve, and health checks keep their descriptors (``balancer.api_guard``)."""

import asyncio
import contextlib
import json
import os
import resource
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

import config
from balancer import api_guard, metrics
from tests.api import fake_controller, serving
from tests.api.fake_controller import FakeController


def _controller(**api: object) -> FakeController:
    fields = ", ".join(f"{key}: {value}" for key, value in api.items())
    text = fake_controller.CONFIG_YAML.replace("LISTEN", "127.0.0.1:9180").replace("api: {", f"api: {{{fields}, ")
    return FakeController(config.parse_config(text, source="fake.yaml"))


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextlib.contextmanager
def _soft_nofile(limit: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def _get(url: str) -> int:
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=5)) as session:
        async with session.get(url) as response:
            await response.read()
            return response.status


@contextlib.asynccontextmanager
async def _served(controller: FakeController) -> AsyncIterator[tuple[str, metrics.Metrics]]:
    async with serving.serve(controller) as (url, collected):
        yield url, collected


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> float:
    """Seconds until the server closed the connection (EOF or reset); fails after ``seconds``."""
    start = time.monotonic()
    try:
        await asyncio.wait_for(reader.read(), timeout=seconds)
    except ConnectionResetError:
        pass
    return time.monotonic() - start


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def test_a_silent_connection_is_closed_after_the_idle_timeout() -> None:
    async with _served(_controller(idle_timeout=0.5)) as (url, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(url))
        assert await _closed_within(reader, 3.0) < 2.0
        writer.close()


async def test_headers_trickled_too_slowly_are_cut_off() -> None:
    async with _served(_controller(idle_timeout=0.8)) as (url, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(url))
        writer.write(b"GET /api/v1/status HTTP/1.1\r\n")
        start = time.monotonic()
        with contextlib.suppress(OSError):
            while not reader.at_eof() and time.monotonic() - start < 5:
                writer.write(b"X-Slow: 1\r\n")  # always something new, never the end of the headers
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(reader.read(1), timeout=0.1)
        assert reader.at_eof() or writer.is_closing()
        assert time.monotonic() - start < 2.5
        writer.close()


async def test_an_idle_keep_alive_connection_is_closed() -> None:
    async with _served(_controller(idle_timeout=0.5)) as (url, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(url))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (await reader.readuntil(b"ok\n")).startswith(b"HTTP/1.1 200")
        assert await _closed_within(reader, 3.0) < 2.0
        writer.close()


async def test_connections_over_the_limits_are_reset_at_once() -> None:
    controller = _controller(max_connections=4, max_connections_per_client=3)
    async with _served(controller) as (url, collected):
        held = [await asyncio.open_connection("127.0.0.1", _port(url)) for _ in range(3)]
        # a fourth from the same address: over the per-client limit
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(url))
        assert await _closed_within(reader, 1.0) < 0.5
        writer.close()
        # another address still gets in, up to the overall limit
        other = await asyncio.open_connection("127.0.0.1", _port(url), local_addr=("127.0.0.3", 0))
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(url), local_addr=("127.0.0.4", 0))
        assert await _closed_within(reader, 1.0) < 0.5
        writer.close()
        for _, w in [*held, other]:
            w.close()
        await asyncio.sleep(0.2)
        assert await _get(f"{url}/healthz") == 200
        text = collected.render().decode()
    assert 'xdplb_api_refused_total{reason="client_limit"} 1.0' in text
    assert 'xdplb_api_refused_total{reason="connection_limit"} 1.0' in text


def test_the_limit_leaves_the_reserve_and_one_fd_per_check() -> None:
    running = _controller(max_connections=5000, fd_reserve=300).running_config
    checks = sum(len(running.resolved_checks(s, b)) for s, b in running.backends())
    assert checks > 0
    assert api_guard.connection_limit(running, 1024) == 1024 - 300 - checks - api_guard.ACCEPT_BURST
    assert api_guard.connection_limit(running, 1 << 20) == 5000
    assert api_guard.connection_limit(running, 100) == 1  # the operator can still get in


def test_the_soft_open_file_limit_is_raised_to_the_hard_one() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    with _soft_nofile(256):
        assert api_guard.raise_open_file_limit() == (hard if hard != resource.RLIM_INFINITY else 1 << 20)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard


FLOOD_CONNECTIONS = 2000
FLOOD_RECONNECT_SECONDS = 6.0
FLOOD_HOLD_SECONDS = 8.0
IDLE_TIMEOUT = 1.0
CHECK_SOCKETS = 300
FD_RESERVE = 400
CONNECTION_LIMIT = 1024 - FD_RESERVE - api_guard.ACCEPT_BURST  # at most: the fake's checks take a few more
PER_CLIENT = 300


@pytest.mark.parametrize(
    ("sources", "refused_as"), [(1, "client_limit"), (10, "connection_limit")], ids=["one client", "ten clients"]
)
async def test_two_thousand_idle_connections_change_nothing(sources: int, refused_as: str) -> None:
    """2,000 connections that never finish a request, each opened again when the server closes it, from one
    address (over the per-client limit) or from ten (over the overall limit: 1,024 less the reserve), in a process
    under systemd's default soft limit of 1,024 descriptors. Meanwhile health checks can open their sockets, the
    server holds no more than its limit, and (one client) requests from 127.0.0.1 are answered; once the client
    stops reopening, the server has let go of every descriptor while the client still holds on.

    Ten clients can keep the API full, so requests from others then wait for a slot; health checks never do."""
    controller = _controller(
        idle_timeout=IDLE_TIMEOUT, max_connections=5000, max_connections_per_client=PER_CLIENT, fd_reserve=FD_RESERVE
    )
    with _soft_nofile(1024):
        async with _served(controller) as (url, collected):
            assert await _get(f"{url}/api/v1/status") == 200
            baseline = _open_fds()
            flood = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.api.flood",
                "127.0.0.1",
                str(_port(url)),
                "--connections",
                str(FLOOD_CONNECTIONS),
                "--sources",
                str(sources),
                "--reconnect",
                str(FLOOD_RECONNECT_SECONDS),
                "--hold",
                str(FLOOD_HOLD_SECONDS),
                stdout=asyncio.subprocess.PIPE,
            )
            try:
                started = asyncio.get_running_loop().time()
                await _during_the_flood(url, baseline, answered=sources == 1)
                # the client only holds on now: the server lets go of every connection after the idle timeout
                await asyncio.sleep(max(0.0, started + FLOOD_RECONNECT_SECONDS - asyncio.get_running_loop().time()))
                deadline = time.monotonic() + IDLE_TIMEOUT + 3.0
                while _open_fds() > baseline + 5 and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                assert flood.returncode is None, "the flood must still hold its connections"
                assert _open_fds() <= baseline + 5
                assert await _get(f"{url}/api/v1/status") == 200
                out, _ = await asyncio.wait_for(flood.communicate(), timeout=FLOOD_HOLD_SECONDS + 20)
            finally:
                if flood.returncode is None:
                    flood.kill()
                    await flood.wait()
            stats = json.loads(out)
            assert stats["opened"] + stats["connect_failed"] >= FLOOD_CONNECTIONS  # reset while connecting: failed
            # The server closed all it accepted (its descriptors, asserted above). What the client still counts as
            # open never reached it: when the accept queue overflowed, a SYN cookie completed the client's handshake
            # but the kernel dropped the ACK; how many depends on timing (85 to 203 seen), so it is not asserted.
            assert stats["closed_by_server"] > 0, json.dumps(stats)
            assert await _get(f"{url}/api/v1/status") == 200
            text = collected.render().decode()
    refused = float(text.split(f'xdplb_api_refused_total{{reason="{refused_as}"}} ')[1].split()[0])
    assert refused >= FLOOD_CONNECTIONS - CONNECTION_LIMIT


async def _during_the_flood(url: str, baseline: int, *, answered: bool) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + FLOOD_RECONNECT_SECONDS - 0.5
    await asyncio.sleep(1.0)
    checked = False
    while loop.time() < end:
        if answered:
            assert await _get(f"{url}/api/v1/status") == 200
            assert await _get(f"{url}/healthz") == 200
        # the limit (per client or overall), and what a burst of accepts holds until each is reset
        assert _open_fds() <= baseline + CONNECTION_LIMIT + api_guard.ACCEPT_BURST + 30
        if not checked:  # health checks still get their sockets
            _health_check_sockets()
            checked = True
        await asyncio.sleep(0.3)


def _health_check_sockets() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(CHECK_SOCKETS + 10)
        sockets: list[socket.socket] = []
        try:
            for _ in range(CHECK_SOCKETS):
                sock = socket.socket()  # EMFILE here is what withdrew a VIP
                sockets.append(sock)
                sock.connect(listener.getsockname())
        finally:
            for sock in sockets:
                sock.close()
