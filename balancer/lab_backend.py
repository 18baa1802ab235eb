"""A tiny real HTTP server for the namespace lab: every answer names the backend that gave it.

Run it in a lab host (``Host.start_http_backend`` does this for you)::

    python -m balancer.lab_backend --name b1 --port 80 [--bind ADDR]

Routes:

- ``GET /healthz`` answers ``ok``;
- ``GET /stream?seconds=N`` keeps the connection open N seconds, sending one line ``b1 <i>`` every 100 ms
  (for tests that need a long-lived flow);
- any other ``GET`` answers the body ``b1\\n`` with the header ``X-Backend: b1``.

It logs nothing per request.
"""

import argparse
import asyncio
import sys
from typing import Sequence

from aiohttp import web

__all__ = ["STREAM_INTERVAL", "build_app", "main"]

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
    for line in range(round(seconds / STREAM_INTERVAL)):
        await response.write(f"{name} {line}\n".encode())
        await asyncio.sleep(STREAM_INTERVAL)
    await response.write_eof()
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
    parser = argparse.ArgumentParser(prog="python -m balancer.lab_backend", description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the name every answer carries")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--bind", default=None, help="address to listen on (default: every address, IPv4 and IPv6)")
    args = parser.parse_args(argv)
    # A short shutdown timeout: open /stream responses must not hold a stopping backend for a minute.
    web.run_app(build_app(args.name), host=args.bind, port=args.port, access_log=None, print=None, shutdown_timeout=0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
