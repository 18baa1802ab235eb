"""``xdplb demo``: the demo lab (``balancer.lab.demo_lab``) with one xdplb node, its console on this machine's
localhost, the commands to try, and a line of live status every two seconds until Ctrl-C, SIGTERM or
``--duration`` seconds; then everything it made is removed.

The lab's namespaces are private to the run; this machine's interfaces, routes and sysctls are not touched. The
console is relayed from the node's namespace to 127.0.0.1 here by ``forward.forward_localhost``.
"""

import asyncio
import dataclasses
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import config
from balancer.lab import demo_lab, forward, netns, sigterm

__all__ = ["DemoOptions", "StatusLine", "run_demo"]

log = logging.getLogger(__name__)

FIRST_CONSOLE_PORT = 9180
STATUS_EVERY = 2.0


_IN_SERVICE = ("active", "draining (weight 0)")  # up, and the data plane has it: traffic works


class _Stopped(Exception):
    """SIGTERM arrived: unwind like Ctrl-C does."""


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    """How ``xdplb demo`` runs: ``duration`` None runs until Ctrl-C or SIGTERM."""

    duration: float | None = None
    first_port: int = FIRST_CONSOLE_PORT
    ready_timeout: float = 90.0


class StatusLine:
    """Turns successive status snapshots (API JSON) and BIRD's view into one line each: VIP, backends, rate."""

    def __init__(self, names: dict[str, str]) -> None:
        self._names = names  # backend address -> lab name
        self._last: tuple[float, int] | None = None

    def render(self, status: dict[str, Any] | None, routers_view: dict[str, set[str]], now: float) -> str:
        """``status`` None means the API did not answer."""
        clock = time.strftime("%H:%M:%S")
        routes = "; ".join(
            f"{vip} {'via ' + ' '.join(sorted(hops)) if hops else 'NOT routed'}" for vip, hops in routers_view.items()
        )
        if status is None:
            return f"{clock}  router: {routes} | xdplb API not answering"
        vips = ", ".join(
            f"{v['vip']} {'announced' if v['announced'] else 'withdrawn (' + v['reason'] + ')'}" for v in status["vips"]
        )
        parts = [f"{clock}  {vips}", f"router: {routes}"]
        packets = 0
        for service in status["services"]:
            up = [
                self._names.get(b["address"], b["address"])
                + ("" if b.get("forwarding", "l2") == "l2" else f"({b['forwarding']})")
                + ("" if b.get("admin", "enabled") == "enabled" else f"[{b['admin']}]")
                for b in service["backends"]
                if b["health"] == "up" and b["dataplane"] in _IN_SERVICE
            ]
            parts.append(
                f"{service['name']} backends up {len(up)}/{len(service['backends'])}"
                + (f" ({' '.join(up)})" if up else "")
            )
            packets += int(service["packets"])
        if self._last is not None and now > self._last[0]:
            parts.append(f"{max(0, packets - self._last[1]) / (now - self._last[0]):.0f} pps to the VIP")
        self._last = (now, packets)
        return " | ".join(parts)


@contextmanager
def _signals_stop() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt and SIGTERM raises _Stopped, anywhere in the main thread.

    SIGINT's handler is set here, not inherited: a shell starts background jobs with SIGINT ignored, and Python
    then leaves it so, which would make Ctrl-C (or ``kill -INT``) do nothing.
    """
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    previous = signal.signal(signal.SIGTERM, sigterm.raising_handler(lambda signum: _Stopped()))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


@contextmanager
def _signals_ignored() -> Iterator[None]:
    """Teardown must finish: a second Ctrl-C would leave half a lab."""
    saved = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


class _Forwarder:
    """``forward_localhost`` on an event loop of its own thread: the rest of the demo is plain blocking code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="console-forward", daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None

    def open(self, host: netns.Host, target: int, first_port: int, tries: int = 20) -> int:
        """Relay the first free port from ``first_port`` up to ``target`` in ``host``; returns the port."""
        for port in range(first_port, first_port + tries):
            future = asyncio.run_coroutine_threadsafe(forward.forward_localhost(port, host, target), self.loop)
            try:
                self._server = future.result(10)
                return port
            except OSError:
                continue
        raise demo_lab.DemoError(f"no free port on 127.0.0.1 in {first_port}-{first_port + tries - 1}")

    def close(self) -> None:
        async def shut() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()

        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self.loop.is_running():
            self.loop.close()


def _instructions(demo: demo_lab.DemoLab, node: demo_lab.NodeProcess, port: int) -> str:
    client, router = demo.client.netns, demo.router.netns
    vip = demo.vips[0]
    base = f"http://127.0.0.1:{port}"
    b2 = demo.servers.get("b2") or next(server for server in demo.servers.values() if server is not None)
    fetch = (
        f"ip netns exec {client} curl -s http://{vip}/"
        if shutil.which("curl")
        else f'ip netns exec {client} python3 -c "import urllib.request; '
        f"print(urllib.request.urlopen('http://{vip}/').read().decode(), end='')\""
    )
    restart = (
        f"ip netns exec {b2.host.netns} {sys.executable} -m balancer.lab.http_backend --name {b2.name} --port 80 &"
    )
    backends = " ".join(f"{host.name}={host.ipv4}" for host in demo.backends)
    if demo.routed:
        backends += ", routed behind the router (GUE, taken off by `xdplb decap`): " + " ".join(
            f"{host.name}={host.ipv4}" for host in demo.routed
        )
    service = demo.template["services"][0]["name"]
    return "\n".join(
        [
            f"xdplb demo lab {demo.lab.run_id} is up: client {demo.client.ipv4}, router {demo.router.ipv4} (BIRD, "
            f"AS {demo.router_as}), xdplb {node.host.ipv4} (AS {demo.local_as}), backends {backends}",
            f"  console   {base}/",
            f"  metrics   {base}/metrics",
            f"  status    {base}/api/v1/status     or: xdplb status --api {base}",
            "Try, in another shell (as root):",
            f"  {fetch}",
            f"  for i in $(seq 30); do {fetch}; done | sort | uniq -c     # traffic spreads",
            f"  kill {b2.process.pid}     # stops {b2.name}'s web server: watch it go down",
            f"  {restart}     # starts it again",
            f"  kill {' '.join(str(server.process.pid) for server in demo.servers.values() if server is not None)}"
            "     # stops every backend: the route leaves the router",
            f"  ip netns exec {router} ip route show {vip}     # the route BIRD installed on the router",
            f"  curl -s -X POST {base}/api/v1/backends/{service}%2F{b2.host.ipv4}/drain     # drain (then .../reset)",
            f"Daemon log: {node.log_path}",
            "Ctrl-C removes everything this demo made.",
        ]
    )


def run_demo(options: DemoOptions, out: TextIO) -> int:
    """Run the demo; returns the exit status. Must run as root, in the main thread."""
    if os.geteuid() != 0:
        out.write("xdplb demo: needs root (network namespaces, XDP, BGP)\n")
        return 1
    with _signals_stop():
        try:
            return _run(options, out)
        except (KeyboardInterrupt, _Stopped):
            out.write("\nxdplb demo: stopped; everything it made is removed\n")
            return 0
        except config.XdplbError as error:  # the lab could not be built, or xdplb failed to start
            out.write(f"xdplb demo: {error}\nxdplb demo: everything it made is removed\n")
            return 1


def _run(options: DemoOptions, out: TextIO) -> int:
    removed = demo_lab.cleanup_demo_leftovers()
    if removed:
        out.write(f"removed leftovers of earlier runs: {' '.join(removed)}\n")
    out.write("building the lab (namespaces, BIRD, backends) and starting xdplb (compiling XDP takes a few s)...\n")
    out.flush()
    demo = demo_lab.DemoLab(nodes=1, routed=1, handle_signals=False)
    forwarder = _Forwarder()
    try:
        demo.create()
        node = demo.start_node(0)
        node.wait_ready(options.ready_timeout)
        port = forwarder.open(node.host, node.api[1], options.first_port)
        out.write(_instructions(demo, node, port) + "\n")
        out.flush()
        return _watch(demo, node, options, out)
    finally:
        with _signals_ignored():
            forwarder.close()
            try:
                demo.destroy()
            except config.XdplbError as error:
                out.write(f"xdplb demo: teardown: {error}\n")


def _watch(demo: demo_lab.DemoLab, node: demo_lab.NodeProcess, options: DemoOptions, out: TextIO) -> int:
    line = StatusLine({host.ipv4: host.name for host in demo.all_backends})
    end = None if options.duration is None else time.monotonic() + options.duration
    while end is None or time.monotonic() < end:
        if node.process.poll() is not None:
            out.write(f"xdplb exited with {node.process.returncode}; last log lines:\n{node.log()[-2000:]}\n")
            return 1
        try:
            status: dict[str, Any] | None = node.status()
        except (OSError, demo_lab.DemoError):
            status = None
        try:
            routes = {vip: demo.announced_by(vip) for vip in demo.vips}
        except config.XdplbError as error:
            out.write(f"xdplb demo: the router's BIRD failed: {error}\n")
            return 1
        out.write(line.render(status, routes, time.monotonic()) + "\n")
        out.flush()
        pause = STATUS_EVERY if end is None else min(STATUS_EVERY, max(0.0, end - time.monotonic()))
        time.sleep(pause)
    out.write(f"xdplb demo: {options.duration:g} s are over; removing everything it made\n")
    return 0
