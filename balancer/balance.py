"""``xdplb balance IFACE VIP RIP...``: balance one VIP's TCP port to real servers from one line, no config file.

The quickest way to try xdplb on a real network. The configuration is built in memory (one interface, one
service, a TCP or HTTP health check unless ``--check none``, no BGP) and the real daemon runs it, as ``xdplb run``
would. A status line is printed every two seconds; Ctrl-C, SIGTERM or SIGHUP (the terminal closed) stop it, and
the XDP program is detached.

>>> cfg = build_config(BalanceOptions("eth0", "192.0.2.10", ("198.18.0.11", "198.18.0.12"), check="http"))
>>> cfg.services[0].name, [check.type for check in cfg.resolved_checks(cfg.services[0], cfg.services[0].backends[0])]
('192.0.2.10:80/tcp', ['http'])
"""

import asyncio
import dataclasses
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

import config
from balancer import status

if TYPE_CHECKING:
    from balancer import daemon

__all__ = ["STATUS_EVERY", "BalanceOptions", "BalanceStatusLine", "build_config", "run_balance"]

STATUS_EVERY = 2.0
_SOURCE = "<xdplb balance>"
_TIMING = {"interval": 1.0, "timeout": 0.5, "rise": 2, "fall": 2}  # a verdict in about 2 s either way
_IN_SERVICE = ("active", "draining (weight 0)")


@dataclasses.dataclass(frozen=True)
class BalanceOptions:
    """What ``xdplb balance`` was asked: ``duration`` None runs until Ctrl-C, SIGTERM or SIGHUP."""

    interface: str
    vip: str
    backends: tuple[str, ...]
    port: int = 80
    check: Literal["tcp", "http", "none"] = "tcp"
    http_path: str = "/"
    mode: Literal["auto", "native", "generic"] = "auto"
    api: str | None = None  # ADDRESS:PORT of the HTTP API (status, console, /metrics); None: no API
    duration: float | None = None
    status_every: float = STATUS_EVERY


def build_config(options: BalanceOptions) -> config.XdplbConfig:
    """The configuration ``options`` stand for; ConfigError (naming the option) if it is not valid."""
    checks: list[dict[str, Any]] = []
    if options.check == "tcp":
        checks = [{"type": "tcp", "timing": _TIMING}]
    elif options.check == "http":
        checks = [{"type": "http", "path": options.http_path, "timing": _TIMING}]
    document: dict[str, Any] = {
        "interfaces": [{"name": options.interface, "mode": options.mode}],
        "services": [{"vip": options.vip, "port": options.port, "checks": checks, "backends": list(options.backends)}],
    }
    if options.api is not None:
        document["api"] = {"listen": options.api}
    return config.validate_config(document, source=_SOURCE)


class BalanceStatusLine:
    """One line per snapshot: backends in service, packet and new-flow rates, XDP state.

    ``12:00:02  192.0.2.10:80/tcp | backends up 2/3 (198.18.0.11 198.18.0.12) | 1520 pps, 31 new flows/s |
    XDP eth0 generic``
    """

    def __init__(self) -> None:
        self._last: tuple[float, int, int] | None = None

    def render(self, snapshot: status.Snapshot, now: float) -> str:
        """The line for ``snapshot`` taken at ``now`` (monotonic); rates from the previous call's."""
        parts = []
        packets = flows = 0
        for service in snapshot.services:
            up = [b.address for b in service.backends if b.health == "up" and b.dataplane in _IN_SERVICE]
            parts.append(f"{service.vip}:{service.port}/{service.protocol}")
            parts.append(f"backends up {len(up)}/{len(service.backends)}" + (f" ({' '.join(up)})" if up else ""))
            down = [f"{b.address}: {b.reason}" for b in service.backends if b.health == "down"]
            if down:
                parts.append("down: " + "; ".join(down))
            packets += service.packets
            flows += service.new_flows
        if self._last is not None and now > self._last[0]:
            seconds = now - self._last[0]
            parts.append(
                f"{max(0, packets - self._last[1]) / seconds:.0f} pps, "
                f"{max(0, flows - self._last[2]) / seconds:.0f} new flows/s"
            )
        self._last = (now, packets, flows)
        xdp = ", ".join(f"{name} {mode}" for name, mode in sorted(snapshot.interfaces.items()))
        reattached = sum(n for reasons in snapshot.xdp_reattaches.values() for n in reasons.values())
        parts.append(f"XDP {xdp or 'NOT attached'}" + (f" (re-attached {reattached}x)" if reattached else ""))
        return f"{time.strftime('%H:%M:%S')}  " + " | ".join(parts)


def run_balance(
    options: BalanceOptions,
    out: TextIO,
    err: TextIO | None = None,
    *,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> int:
    """Run until stopped, the status on ``out`` and errors on ``err``; returns the exit status (2: bad arguments,
    1: the daemon failed). Root, main thread."""
    err = err or sys.stderr
    try:
        cfg = build_config(options)
    except config.ConfigError as error:
        err.write(f"xdplb balance: {_arguments(error)}\n")
        return 2
    try:
        socket.if_nametoindex(options.interface)
    except OSError:
        err.write(f"xdplb balance: IFACE: no interface {options.interface} here\n")
        return 2
    if os.geteuid() != 0:
        err.write("xdplb balance: needs root (XDP)\n")
        return 1
    checks = "no health checks" if options.check == "none" else f"{options.check} health checks"
    out.write(
        f"xdplb balance: {options.vip}:{options.port}/tcp on {options.interface} to "
        f"{len(options.backends)} backends, {checks}; compiling the XDP program (a few seconds)...\n"
        f"  clients reach {options.vip} through this node: a route to it via this node on the router, or "
        f"`ip addr add {options.vip}/32 dev lo` here; every backend has {options.vip} on its loopback and does "
        f"not answer ARP for it (Direct Server Return)\n"
    )
    out.flush()
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(_run(cfg, options, out))
    except config.XdplbError as error:
        err.write(f"xdplb balance: {error}\n")
        return 1


def _arguments(error: config.ConfigError) -> str:
    """A config error said in terms of the command line: ``services[0].vip`` is the VIP argument."""
    text = str(error).replace(f"{_SOURCE}: ", "")
    text = re.sub(r"services\[0\]\.backends\[(\d+)\](\.address)?", lambda m: f"RIP {int(m[1]) + 1}", text)
    for path, name in (
        ("services[0].vip", "VIP"),
        ("services[0].port", "--port"),
        ("interfaces[0].name", "IFACE"),
        ("api.listen", "--api"),
    ):
        text = text.replace(path, name)
    return text


async def _run(cfg: config.XdplbConfig, options: BalanceOptions, out: TextIO) -> int:
    from balancer import daemon, faces  # bcc, the checkers: only once the arguments are good

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    if options.duration is not None:
        loop.call_later(options.duration, stop.set)
    node = daemon.Daemon(Path(_SOURCE), initial_config=cfg, stop=stop, drain_seconds=0.0, start_grace=5.0)
    faces.attach(node, serve_api=options.api is not None)
    task = asyncio.create_task(node.run(handle_signals=False), name="xdplb-balance")
    printer = asyncio.create_task(_print_status(node, options, out), name="status-line")
    try:
        await task
    finally:
        printer.cancel()
        for signum in signals:
            loop.remove_signal_handler(signum)
    out.write(f"xdplb balance: stopped; XDP detached from {options.interface}\n")
    return 0


async def _print_status(node: "daemon.Daemon", options: BalanceOptions, out: TextIO) -> None:
    await node.ready_event.wait()
    where = f" API http://{options.api}/" if options.api else ""
    out.write(f"xdplb balance: running.{where} Ctrl-C stops it and detaches XDP.\n")
    line = BalanceStatusLine()
    while True:
        out.write(line.render(node.snapshot(), time.monotonic()) + "\n")
        out.flush()
        await asyncio.sleep(options.status_every)
