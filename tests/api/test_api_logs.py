"""Malformed requests are logged as one line each, without a traceback, at a bounded rate (``balancer.api_logs``)."""

import asyncio
import logging
import time

import pytest

from balancer import api_logs
from tests.api import serving
from tests.api.fake_controller import FakeController

MALFORMED = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header Line\r\n\r\n"


async def _send(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    answer = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    return answer


def test_a_bucket_allows_a_burst_then_the_rate_and_counts_the_rest() -> None:
    now = [0.0]
    bucket = api_logs.TokenBucket(rate=2.0, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(5)] == [True, True, True, False, False]
    assert bucket.suppressed == 2
    now[0] = 0.5
    assert (bucket.take(), bucket.take()) == (True, False)
    now[0] = 100.0
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]  # never more than the burst


async def test_a_flood_of_malformed_requests_logs_a_few_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    requests = 300
    async with serving.serve(FakeController()) as (url, collected):
        port = int(url.rsplit(":", 1)[1])
        start = time.monotonic()
        for _ in range(requests):
            assert b" 400 " in (await _send(port, MALFORMED)).split(b"\r\n")[0]
        elapsed = time.monotonic() - start
        await asyncio.sleep(1.0)  # the bucket refills: the next line says how many were left out
        assert b" 400 " in (await _send(port, MALFORMED)).split(b"\r\n")[0]
        text = collected.render().decode()
    server = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert 1 <= len(server) <= 20 + 2 * (elapsed + 1.0) + 2
    assert all(r.getMessage().startswith("event=api_bad_request remote=127.0.0.1 status=400 ") for r in server)
    access = [r for r in caplog.records if r.name == "aiohttp.access"]
    assert 1 <= len(access) <= 20 + 2 * (elapsed + 1.0) + 2
    summaries = [r.getMessage() for r in caplog.records if "event=api_log_suppressed" in r.getMessage()]
    suppressed = {m.split("kind=")[1].split()[0]: int(m.split("suppressed=")[1]) for m in summaries}
    assert suppressed["bad_request"] == requests + 1 - len(server)
    assert suppressed["access_4xx"] == requests + 1 - len(access)
    assert f'xdplb_api_refused_total{{reason="bad_request"}} {requests + 1}.0' in text


async def test_ordinary_access_lines_are_never_left_out(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with serving.serve(FakeController()) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        for _ in range(60):
            await _send(port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert len([r for r in caplog.records if r.name == "aiohttp.access"]) == 60
