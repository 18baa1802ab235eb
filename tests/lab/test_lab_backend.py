"""The lab's HTTP backend: what it answers, its stream, its quiet and its prompt stop."""

import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request

from aiohttp.test_utils import TestClient, TestServer

from balancer.lab import http_backend


async def test_every_get_answers_the_backend_name() -> None:
    async with TestClient(TestServer(http_backend.build_app("b1"))) as client:
        for path in ("/", "/any/path?x=1"):
            response = await client.get(path)
            assert response.status == 200
            assert response.headers["X-Backend"] == "b1"
            assert await response.text() == "b1\n"
        health = await client.get("/healthz")
        assert (health.status, await health.text()) == (200, "ok\n")


async def test_stream_sends_a_line_per_interval_then_ends() -> None:
    async with TestClient(TestServer(http_backend.build_app("b2"))) as client:
        response = await client.get("/stream", params={"seconds": "0.3"})
        assert response.headers["X-Backend"] == "b2"
        assert await response.text() == "b2 0\nb2 1\nb2 2\n"
        for bad in ("x", "-1", "100000"):
            assert (await client.get("/stream", params={"seconds": bad})).status == 400


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_module_serves_quietly_and_stops_promptly_with_a_stream_open() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "balancer.lab.http_backend", "--name", "b9", "--port", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    assert response.read() == b"b9\n"
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "backend did not come up"
                time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as dropped:  # a client vanishing mid-stream
            dropped.sendall(b"GET /stream?seconds=600 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"b9 0" in dropped.recv(4096) or b"b9 0" in dropped.recv(4096)
            dropped.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a RST
        stream = urllib.request.urlopen(f"http://127.0.0.1:{port}/stream?seconds=600", timeout=5)
        assert stream.readline() == b"b9 0\n"
        time.sleep(0.5)  # the server writes into the dropped stream and meets the reset
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, "an open stream must not hold the shutdown for long"
        stream.close()
        out, err = proc.communicate()
        assert (out, err) == (b"", b""), "nothing is logged per request"
    finally:
        proc.kill()
        proc.wait()
