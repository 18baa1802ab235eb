"""A tiny real HTTP server for the namespace lab: every answer names the backend that gave it.

Run it in a lab host (``Host.start_http_backend`` does this for you)::

    python -m balancer.lab.http_backend --name b1 --port 80 [--bind ADDR]

Routes:

- ``GET /healthz`` answers ``ok``;
- ``GET /stream?seconds=N`` keeps the connection open N seconds, sending one line ``b1 <i>`` every 100 ms
  (for tests that need a long-lived flow);
- any other ``GET`` answers the body ``b1\\n`` with the header ``X-Backend: b1``.

It logs nothing per request. ``HttpBackend`` is the handle the lab keeps on such a server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from typing import IO, TYPE_CHECKING, Any, Sequence

from aiohttp import web

import config

if TYPE_CHECKING:
    from balancer.lab.netns import Host

__all__ = ["STREAM_INTERVAL", "BackendError", "HttpBackend", "build_app", "main", "stop_process"]

STREAM_INTERVAL = 0.1
"""Seconds between two lines of ``/stream``."""

_MAX_STREAM_SECONDS = 3600.0
_NAME = web.AppKey("name", str)


async def _name(request: web.Request) -> web.Response:
    name = request.app[_NAME]
    return web.Response(text=f"{name}\n", headers={"X-Backend": name})


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n", headers={"X-Backend": request.app[_NAME]})


async def _stream(request: web.Request) -> web.StreamResponse:
    name = request.app[_NAME]
    try:
        seconds = float(request.query.get("seconds", "10"))
    except ValueError:
        raise web.HTTPBadRequest(text="seconds must be a number\n") from None
    if not 0 <= seconds <= _MAX_STREAM_SECONDS:
        raise web.HTTPBadRequest(text=f"seconds must be within 0..{_MAX_STREAM_SECONDS:g}\n")
    response = web.StreamResponse(headers={"X-Backend": name, "Content-Type": "text/plain"})
    await response.prepare(request)
    try:
        for line in range(round(seconds / STREAM_INTERVAL)):
            await response.write(f"{name} {line}\n".encode())
            await asyncio.sleep(STREAM_INTERVAL)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client left (or a failover test cut the flow): not worth a traceback per request
    return response


def build_app(name: str) -> web.Application:
    """Return the application answering as backend ``name``."""
    app = web.Application()
    app[_NAME] = name
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/stream", _stream)
    app.router.add_get("/{tail:.*}", _name)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m balancer.lab.http_backend", description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the name every answer carries")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--bind", default=None, help="address to listen on (default: every address, IPv4 and IPv6)")
    args = parser.parse_args(argv)
    # A short shutdown timeout: open /stream responses must not hold a stopping backend for a minute.
    try:
        web.run_app(
            build_app(args.name), host=args.bind, port=args.port, access_log=None, print=None, shutdown_timeout=0.5
        )
    except OSError as exc:
        sys.stderr.write(f"http_backend {args.name}: cannot serve on port {args.port}: {exc}\n")
        return 1
    return 0


class HttpBackend:
    """A running lab backend in a lab host, from ``Host.start_http_backend``; ``stop()`` it or use ``with``."""

    def __init__(
        self, host: Host, *, name: str, port: int, address: str, process: subprocess.Popen[Any], stderr: IO[bytes]
    ) -> None:
        self.host = host
        self.name = name
        self.port = port
        self.address = address
        self.process = process
        self._stderr = stderr

    def __enter__(self) -> HttpBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout: float) -> None:
        """Poll ``GET /healthz`` from inside the host's namespace until this backend answers it (blocking)."""
        deadline = time.monotonic() + timeout
        request = b"GET /healthz HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n"
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        expected = f"\r\nx-backend: {self.name}\r\n".lower().encode()
        while True:
            if self.process.poll() is not None:
                self._stderr.seek(0)
                err = self._stderr.read().decode(errors="replace").strip()
                raise BackendError(f"backend {self.name} in {self.host.netns} exited {self.process.returncode}: {err}")
            with self.host.entered():
                sock = socket.socket(family, socket.SOCK_STREAM)
            with sock:
                sock.settimeout(1.0)
                with contextlib.suppress(OSError):
                    sock.connect((self.address, self.port))
                    sock.sendall(request)
                    head = b""
                    while b"\r\n\r\n" not in head and len(head) < 4096 and (chunk := sock.recv(4096)):
                        head += chunk
                    # Our own answer, not that of another server already on this port.
                    if head.startswith(b"HTTP/1.1 200") and expected in head.lower():
                        return
            if time.monotonic() > deadline:
                raise BackendError(f"backend {self.name} in {self.host.netns} not answering after {timeout:g} s")
            time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``); safe to call twice."""
        stop_process(self.process, timeout)
        self._stderr.close()


class BackendError(config.XdplbError, RuntimeError):
    """The lab backend exited or did not answer in time."""


def stop_process(proc: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM the process group of ``proc``, SIGKILL it after ``timeout`` seconds, and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


if __name__ == "__main__":
    sys.exit(main())
