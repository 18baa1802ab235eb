"""The HTTP API of the daemon: JSON status and config, admin calls, Prometheus ``/metrics`` and the web console.

Routes (JSON unless said otherwise; errors are ``{"error": "..."}``):

========================================  =====================================================================
``GET /healthz``                          200 ``ok`` once the daemon is ready (``Controller.ready``), 503 before
``GET /api/v1/status``                    the snapshot (``status.to_json``) plus ``time``: when it was taken (the
                                          server's clock, for rates); snapshots are cached (``SnapshotCache``)
``GET /api/v1/summary``                   counts of backends (by health, data-plane state, admin state), services
                                          up, VIPs announced, peers established, and the first backends that take
                                          no new flows (``status.summary``): a few kilobytes at any size
``GET /api/v1/services``                  a page of service rows, problems first (``status_pages``): query
                                          ``q`` (words to look for), ``problems=1``, ``offset``, ``limit``
``GET /api/v1/backends?service=ID``       a page of one service's backends, not serving first (same query)
``GET /api/v1/config``                    ``{"digest", "source", "config"}``: the running config, values not on
                                          ``config.redact``'s allow-list redacted
``POST /api/v1/reload``                   re-read the file: 200 and the ``ReloadResult``, or 400 and the result
                                          whose ``message`` lists the errors (the running config stays)
``POST /api/v1/backends/KEY/ACTION``      ACTION ``drain|disable|enable`` overrides the admin state of the backend
                                          KEY (``web/198.18.0.11``, may be percent-encoded), ``reset`` returns to
                                          the file's state; 200 and the backend, 404 for an unknown KEY
``GET /metrics``                          Prometheus exposition (``balancer.metrics``)
``GET /``, ``GET /static/*``              the console: polls the summary and the pages it shows every 2 s
========================================  =====================================================================

Connections are bounded as ``balancer.api_guard`` describes (idle and header timeout, connection limits that leave
health checks their file descriptors), and malformed requests are logged as ``balancer.api_logs`` describes.

Admin POSTs are guarded as ``balancer.api_auth`` describes (bearer token, or loopback only); so are status,
config and metrics when ``api.read_token_required`` is set. ``ApiServer`` runs
the app with the house lifecycle ``setup()`` → ``start()`` → ``cleanup()``; aiohttp never owns signals.
"""

import asyncio
import concurrent.futures
import functools
import json
import logging
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

import config
from balancer import api_auth, api_guard, api_logs, metrics, snapshot_cache, status, status_pages

__all__ = ["CONTROLLER", "STATIC_DIR", "ApiError", "ApiServer", "make_app"]

log = logging.getLogger(__name__)

CONTROLLER = web.AppKey[status.Controller]("controller")
"""The core, injected into every handler."""
STATIC_DIR = Path(__file__).with_name("static")
"""The console's files (package data)."""

_LOOPBACK = web.AppKey("loopback", bool)
_METRICS = web.AppKey("metrics", metrics.Metrics)
_ACTIONS: dict[str, config.AdminState | None] = {
    "drain": config.AdminState.DRAINED,
    "disable": config.AdminState.DISABLED,
    "enable": config.AdminState.ENABLED,
    "reset": None,
}
# The console talks only to this server: a browser refuses anything else the page might try to load.
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

Handler = Callable[[web.Request], Awaitable[web.Response]]

_ACCESS_LOG_FORMAT = 'event=http_request remote=%a request="%r" status=%s bytes=%b seconds=%Tf'


class ApiError(config.XdplbError, RuntimeError):
    """The API server was used out of order (``start()`` before ``setup()``)."""


def _error(status_class: type[web.HTTPError], message: str) -> web.HTTPError:
    return status_class(text=json.dumps({"error": message}), content_type="application/json")


async def _healthz(request: web.Request) -> web.Response:
    if request.app[CONTROLLER].ready:  # a flag, not a snapshot: probes come often and must answer at once
        return web.Response(text="ok\n")
    return web.Response(status=503, text="starting\n")


def _render_json(taken: snapshot_cache.Taken, to_json: Callable[[status.Snapshot], dict[str, Any]]) -> bytes:
    body = to_json(taken.snapshot)
    body["time"] = taken.at  # when the snapshot was taken (the server's clock, for rates)
    return json.dumps(body).encode()


def _snapshot_route(name: str, to_json: Callable[[status.Snapshot], dict[str, Any]]) -> Handler:
    """A GET answering ``to_json(snapshot)`` plus ``time``, rendered once per snapshot in a worker thread however
    many clients ask."""

    async def handler(request: web.Request) -> web.Response:
        _authorize_read(request)
        taken = await request.app[_METRICS].snapshots.get()
        body = await taken.rendered(name, lambda: functools.partial(_render_json, taken, to_json))
        return web.Response(body=body, content_type="application/json")

    return handler


_status = _snapshot_route("status", status.to_json)
_summary = _snapshot_route("summary", status.summary)


# Pages are sliced in a thread of their own: however many consoles ask, they never take the default executor's
# threads from the reconciler's data-plane writes and Maglev builds.
_PAGES = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="api-pages")


def _page_request(request: web.Request) -> status_pages.PageRequest:
    query = request.query
    try:
        return status_pages.PageRequest(
            query=query.get("q", "")[:200],
            problems=query.get("problems") in ("1", "true"),
            offset=int(query.get("offset", "0")),
            limit=int(query.get("limit", "50")),
        )
    except ValueError as error:
        raise _error(web.HTTPBadRequest, f"bad page: {error}") from None


async def _service_index(request: web.Request) -> tuple[snapshot_cache.Taken, status_pages.ServiceIndex]:
    taken = await request.app[_METRICS].snapshots.get()
    index = await taken.rendered("service_index", lambda: functools.partial(status_pages.ServiceIndex, taken.snapshot))
    return taken, index


async def _services(request: web.Request) -> web.Response:
    _authorize_read(request)
    page = _page_request(request)
    taken, index = await _service_index(request)
    body = await asyncio.get_running_loop().run_in_executor(_PAGES, index.services, page)
    body["time"] = taken.at
    return web.json_response(body)


async def _backends(request: web.Request) -> web.Response:
    _authorize_read(request)
    page = _page_request(request)
    service_id = request.query.get("service")
    if not service_id:
        raise _error(web.HTTPBadRequest, "which service: ?service=VIP:PORT/PROTOCOL (a row's id)")
    taken, index = await _service_index(request)
    body = await asyncio.get_running_loop().run_in_executor(_PAGES, index.backends, service_id, page)
    if body is None:
        raise _error(web.HTTPNotFound, f"no service {service_id!r}")
    body["time"] = taken.at
    return web.json_response(body)


def _config_json(running: config.XdplbConfig, source: str) -> bytes:
    body = {"digest": running.digest(), "source": source, "config": config.redact(running.model_dump(mode="json"))}
    return json.dumps(body).encode()


async def _config(request: web.Request) -> web.Response:
    _authorize_read(request)
    running = request.app[CONTROLLER].running_config
    source = (await request.app[_METRICS].snapshots.get()).snapshot.config_source
    # the config is frozen, so it can be dumped in a thread: 0.4 s at 10,000 backends
    body = await asyncio.to_thread(_config_json, running, source)
    return web.Response(body=body, content_type="application/json")


def _authorize(request: web.Request) -> None:
    api_auth.authorize(request, api=request.app[CONTROLLER].running_config.api, loopback=request.app[_LOOPBACK])


def _authorize_read(request: web.Request) -> None:
    api_auth.authorize_read(request, api=request.app[CONTROLLER].running_config.api)


async def _reload(request: web.Request) -> web.Response:
    _authorize(request)
    controller = request.app[CONTROLLER]
    try:
        result = await controller.reload()
    except config.XdplbError as error:  # the core should return a failed result; a raised error means the same
        result = status.ReloadResult(ok=False, config_digest=controller.running_config.digest(), message=str(error))
    finally:
        request.app[_METRICS].snapshots.invalidate()  # the next status shows the reload
    log.info("event=api_reload ok=%s digest=%s remote=%s", result.ok, result.config_digest, request.remote)
    return web.json_response(status.to_json(result), status=200 if result.ok else 400)


async def _admin(request: web.Request) -> web.Response:
    _authorize(request)
    controller = request.app[CONTROLLER]
    key, action = request.match_info["key"], request.match_info["action"]
    try:
        await controller.set_admin(key, _ACTIONS[action])
    except KeyError:
        raise _error(web.HTTPNotFound, f"no backend {key!r}") from None
    log.info("event=api_admin backend=%s action=%s remote=%s", key, action, request.remote)
    snapshots = request.app[_METRICS].snapshots
    snapshots.invalidate()  # this answer, and the next status, show the change
    reports = [b for s in (await snapshots.get()).snapshot.services for b in s.backends if b.key == key]
    admin = reports[0].admin if reports else None
    override = reports[0].admin_override if reports else None
    return web.json_response({"key": key, "action": action, "admin": admin, "admin_override": override})


async def _metrics(request: web.Request) -> web.Response:
    _authorize_read(request)
    # Compressed once per snapshot by Metrics, not by aiohttp on every response: Prometheus always asks for gzip.
    gzip = "gzip" in request.headers.get("Accept-Encoding", "").lower()
    accept = ",".join(request.headers.getall("Accept", []))
    body, content_type = await request.app[_METRICS].exposition(accept, gzip=gzip)
    headers = {"Content-Type": content_type, "Vary": "Accept-Encoding"}
    if gzip:
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, headers=headers)


async def _console(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


@web.middleware
async def _security_headers(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as exception:
        exception.headers.update(_SECURITY_HEADERS)
        raise
    response.headers.update(_SECURITY_HEADERS)
    return response


def make_app(
    controller: status.Controller,
    *,
    metrics: metrics.Metrics,
    listen_host: config.IpAddress | None = None,
) -> web.Application:
    """The aiohttp application serving ``controller``.

    ``listen_host`` is where it will be bound (default: the running config's ``api.host``); it decides whether
    admin requests without a token are allowed (only on loopback).
    """
    host = listen_host if listen_host is not None else controller.running_config.api.host
    app = web.Application(middlewares=[_security_headers])
    app[CONTROLLER] = controller
    app[_LOOPBACK] = host.is_loopback
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/api/v1/status", _status)
    app.router.add_get("/api/v1/summary", _summary)
    app.router.add_get("/api/v1/services", _services)
    app.router.add_get("/api/v1/backends", _backends)
    app.router.add_get("/api/v1/config", _config)
    app.router.add_post("/api/v1/reload", _reload)
    app.router.add_post("/api/v1/backends/{key:.+}/{action:drain|disable|enable|reset}", _admin)
    app[_METRICS] = metrics
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/", _console)
    app.router.add_static("/static", STATIC_DIR)
    return app


class ApiServer:
    """The API on ``host:port`` (default: the running config's ``api.listen``); ``port=0`` picks a free one.

    ``ready`` is set once the socket listens, and ``port`` is then the bound port::

        server = ApiServer(controller, metrics=metrics.Metrics(controller))
        await server.setup()
        await server.start()
        ...
        await server.cleanup()   # safe after a partial setup, and twice
    """

    def __init__(
        self,
        controller: status.Controller,
        *,
        metrics: metrics.Metrics,
        host: config.IpAddress | None = None,
        port: int | None = None,
        shutdown_timeout: float = 5.0,
    ) -> None:
        api = controller.running_config.api
        self._controller = controller
        self._metrics = metrics
        self.host = host if host is not None else api.host
        self.port = port if port is not None else api.port
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._started = False
        self._limit: tuple[config.XdplbConfig | None, int] = (None, 0)
        self.guard = api_guard.ConnectionGuard(
            limit=self._connection_limit,
            per_client=lambda: self._controller.running_config.api.max_connections_per_client,
            on_refused=self._metrics.api_refused,
        )
        self.ready = asyncio.Event()

    async def setup(self) -> None:
        """Build the application and its runner (no socket yet)."""
        if self._runner is not None:
            raise ApiError("setup() was already called; call cleanup() first")
        app = make_app(self._controller, metrics=self._metrics, listen_host=self.host)
        idle = self._controller.running_config.api.idle_timeout
        runner = web.AppRunner(
            app,
            handle_signals=False,
            shutdown_timeout=self._shutdown_timeout,
            access_log=api_logs.AccessLog(logging.getLogger("aiohttp.access")),
            access_log_format=_ACCESS_LOG_FORMAT,
            logger=api_logs.ServerLog(
                logging.getLogger("aiohttp.server"), on_bad_request=lambda: self._metrics.api_refused("bad_request")
            ),
            keepalive_timeout=idle,  # from the accept on, so it is the header deadline too (see api_guard)
            lingering_time=min(idle, 10.0),
        )
        await runner.setup()
        self._runner = runner

    async def start(self) -> None:
        """Listen; ``ready`` is set when this returns."""
        if self._runner is None:
            raise ApiError("call setup() before start()")
        if self._started:
            raise ApiError("start() was already called")
        server = self._runner.server
        assert server is not None  # set by setup()
        # Not a TCPSite: every connection goes through the guard first.
        self._listener = await asyncio.get_running_loop().create_server(
            self.guard.protocol_factory(server),
            str(self.host),
            self.port,
            reuse_address=True,
            backlog=api_guard.ACCEPT_BURST,
        )
        self._started = True
        self.port = self._listener.sockets[0].getsockname()[1]
        log.info("event=api_listening host=%s port=%s", self.host, self.port)
        self.ready.set()

    def _connection_limit(self) -> int:
        running = self._controller.running_config
        if self._limit[0] is not running:  # at 10,000 backends, counting the checks takes a few milliseconds
            self._limit = (running, api_guard.connection_limit(running, api_guard.open_file_limit()))
        return self._limit[1]

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the listener (IPv6 in brackets)."""
        host = f"[{self.host}]" if self.host.version == 6 else str(self.host)
        return f"http://{host}:{self.port}"

    async def cleanup(self) -> None:
        """Stop listening and finish in-flight requests (up to ``shutdown_timeout``); idempotent."""
        runner, self._runner = self._runner, None
        listener, self._listener = self._listener, None
        self.ready.clear()
        self._started = False
        if listener is not None:
            listener.close()
        if runner is not None:
            await asyncio.shield(runner.cleanup())
            log.info("event=api_stopped host=%s port=%s", self.host, self.port)
