"""The scale lab: one xdplb node with many services and backends, BIRD as its peer, one fast web server for all.

Built on the demo lab (router with BIRD, client, one node, one backend host). The backend host takes every
backend address (198.19.0.0/16, on-link for the node too) and runs one small asyncio server that answers
``200 OK`` on each service port, for every address at once. The node gets a permanent neighbour entry per
backend address, in its own namespace: the kernel's neighbour-table limits are shared by every namespace on
these machines, so a lab with thousands of on-link backends must not rely on (or raise) them.

``python -m balancer.lab.scale serve PORT...`` is that server; ``ScaleLab`` builds the lab and measures a run
(``benchmarks/bench_scale.py`` prints the figures; ``tests/e2e/test_e2e_scale.py`` checks the behaviour small).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import ipaddress
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from balancer.lab import demo_lab, http_backend

__all__ = ["ScaleLab", "backend_address", "main", "measure"]

log = logging.getLogger(__name__)

BACKEND_NET = ipaddress.IPv4Network("198.19.0.0/16")
NODE_BACKEND_SIDE = "198.19.255.254"  # the node's address on the backends' subnet
PORTS = (80, 81, 82, 83)  # four services per VIP
_NUD_PERMANENT = 0x80
_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
_KEPT_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"


def backend_address(index: int) -> str:
    """The ``index``-th backend address: 198.19.0.1, ... 198.19.0.250, 198.19.1.1, ..."""
    return f"198.19.{index // 250}.{index % 250 + 1}"


class _Answer(asyncio.Protocol):
    transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        # One request per read is all a check sends; a request that does not ask to close keeps the connection.
        if b"connection: close" in data.lower():
            self.transport.write(_RESPONSE)
            self.transport.close()
        else:
            self.transport.write(_KEPT_RESPONSE)


async def _serve(ports: Sequence[int]) -> None:
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(_Answer, "0.0.0.0", port, backlog=4096, reuse_address=True) for port in ports]
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print("serving", flush=True)
    await stop.wait()
    for server in servers:
        server.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``serve PORT...``: answer every HTTP request on these ports with 200, until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m balancer.lab.scale", description="the scale lab's web server")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("ports", type=int, nargs="+")
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # plain asyncio is slower, still right
        pass
    asyncio.run(_serve(args.ports))
    return 0


class ScaleLab:
    """``services`` services (``services / 4`` VIPs, ports 80-83) of ``backends`` backends each, checked over HTTP.

    ``spare`` more backend addresses exist on the backend host (for reloads that add backends). ``keepalive``:
    the checks reuse their connections (the server keeps a connection open unless a request asks to close it).
    """

    def __init__(
        self,
        *,
        services: int,
        backends: int,
        interval: float = 2.0,
        timeout: float = 1.0,
        rise: int = 2,
        fall: int = 3,
        spare: int = 0,
        keepalive: bool = False,
    ) -> None:
        if services % len(PORTS) or not 0 < services // len(PORTS) <= 250:
            raise ValueError(f"services must be a multiple of {len(PORTS)} up to {250 * len(PORTS)}")
        self.services = services
        self.backends = backends
        self.spare = spare
        self.timing = {"interval": interval, "timeout": timeout, "rise": rise, "fall": fall}
        self.keepalive = keepalive
        self._dir = Path(tempfile.mkdtemp(prefix="xdplb-scale-"))
        self.template = self._template()
        template_path = self._dir / "template.yaml"
        template_path.write_text(yaml.safe_dump(self.template, sort_keys=False))
        self.demo = demo_lab.DemoLab(nodes=1, backends=1, template=template_path)
        self._server: subprocess.Popen[Any] | None = None

    def check(self, path: str) -> dict[str, Any]:
        """The lab's HTTP check of ``path``, as config."""
        return {"type": "http", "path": path, "timing": self.timing} | ({"keepalive": True} if self.keepalive else {})

    @property
    def vips(self) -> list[str]:
        return [f"192.0.2.{i + 1}" for i in range(self.services // len(PORTS))]

    def _template(self) -> dict[str, Any]:
        data: dict[str, Any] = copy.deepcopy(yaml.safe_load(demo_lab.DEMO_CONFIG.read_text()))
        data["policies"] = {"web": {"checks": [self.check("/")]}}
        services = []
        for i in range(self.services):
            vip, port = self.vips[i // len(PORTS)], PORTS[i % len(PORTS)]
            members = [{"address": backend_address(i * self.backends + j)} for j in range(self.backends)]
            services.append(
                {
                    "name": f"s{i}",
                    "vip": vip,
                    "port": port,
                    "protocol": "tcp",
                    "need": 1,
                    "policy": "web",
                    "backends": members,
                }
            )
        data["services"] = services
        return data

    # lifecycle

    def __enter__(self) -> ScaleLab:
        try:
            self._create()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def _create(self) -> None:
        started = time.monotonic()
        demo = self.demo.create()
        node, host = demo.nodes[0], demo.backends[0]
        demo.stop_backend(host.name)  # the demo's web server: this lab serves every port with one fast server
        count = self.services * self.backends + self.spare
        addresses = [backend_address(i) for i in range(count)]

        with host.ipr() as ipr:
            for address in addresses:
                ipr.addr("replace", index=host.ifindex, address=address, prefixlen=BACKEND_NET.prefixlen)
        with node.ipr() as ipr:
            ipr.addr("replace", index=node.ifindex, address=NODE_BACKEND_SIDE, prefixlen=BACKEND_NET.prefixlen)
            for address in addresses:
                ipr.neigh("replace", dst=address, lladdr=host.mac, ifindex=node.ifindex, state=_NUD_PERMANENT)
        self._server = host.popen(
            [sys.executable, "-m", "balancer.lab.scale", "serve", *map(str, PORTS)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self._server.stdout is not None
        if self._server.stdout.readline().strip() != b"serving":
            raise demo_lab.DemoError("the scale lab's web server did not start")
        log.info(
            "event=scale_lab_created services=%d backends=%d seconds=%.1f",
            self.services,
            count,
            time.monotonic() - started,
        )

    def destroy(self) -> None:
        """Stop the server, then the demo lab (node, BIRD, namespaces). Idempotent."""
        if self._server is not None:
            http_backend.stop_process(self._server, 2.0)
            self._server = None
        self.demo.destroy()
        for path in sorted(self._dir.glob("*")):
            path.unlink()
        if self._dir.exists():
            self._dir.rmdir()

    # the node

    def start(self, *, start_grace: float = 30.0) -> demo_lab.NodeProcess:
        """Start ``xdplb run`` on the node (returns at once)."""
        return self.demo.start_node(0, start_grace=start_grace)

    @property
    def node(self) -> demo_lab.NodeProcess:
        node = self.demo.processes[0]
        if node is None:
            raise demo_lab.DemoError("call start() first")
        return node

    def reload(self, change: Callable[[dict[str, Any]], None]) -> tuple[float, Any]:
        """Apply ``change`` to the running config, write it, POST a reload; (seconds the POST took, its answer)."""
        data: dict[str, Any] = yaml.safe_load(self.node.config_path.read_text())
        change(data)
        self.demo.write_config(0, data)
        started = time.monotonic()
        code, body = self.node.request("POST", "/api/v1/reload", timeout=60)
        if code != 200:
            raise demo_lab.DemoError(f"reload refused ({code}): {body}")
        return time.monotonic() - started, body

    def all_up(self) -> bool:
        """Every backend up and in the data plane, every VIP announced and in BIRD."""
        code, summary = self.node.request("GET", "/api/v1/summary")  # a few kB, where the status is 4 MB at 10,000
        if code != 200:
            raise demo_lab.DemoError(f"summary API answered {code}: {summary!r}")
        backends = summary["backends"]
        if not summary["ready"] or backends["health"].get("up", 0) != backends["total"]:
            return False
        if summary["not_serving_total"] or summary["vips"]["announced"] != summary["vips"]["total"]:
            return False
        return len(self.demo.bird.routes()) >= len(self.vips)

    def metrics(self) -> tuple[float, str]:
        """(seconds a /metrics scrape took, its text), asked for as Prometheus asks (gzip, text format 0.0.4)."""
        started = time.monotonic()
        code, body = self.node.request("GET", "/metrics", timeout=60, headers=_PROMETHEUS)
        if code != 200:
            raise demo_lab.DemoError(f"/metrics answered {code}")
        return time.monotonic() - started, str(body)


_PROMETHEUS = {  # the headers of a Prometheus 2.x scrape
    "Accept": "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}


def wait_for(what: str, predicate: Callable[[], bool], timeout: float, *, every: float = 0.5) -> float:
    """Seconds until ``predicate()`` held; DemoError after ``timeout``."""
    started = time.monotonic()
    while True:
        try:
            if predicate():
                return time.monotonic() - started
        except (OSError, demo_lab.DemoError):  # the API not up yet
            pass
        if time.monotonic() - started > timeout:
            raise demo_lab.DemoError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def measure(
    lab: ScaleLab,
    *,
    window: float,
    settle: float,
    flap_window: float,
    ready_timeout: float = 300.0,
    progress: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Start the node, and measure: start until all up, a steady window, a 1% reload, a check reload, the stop.

    Every server stays healthy throughout, so any transition to down is false, and any transition of a backend a
    reload did not add is a flap. The figures are the keys of ``make bench-scale``'s JSON. A node that never gets
    every backend up within ``ready_timeout`` gets ``ready_s`` None, the count it reached, the steady-window
    figures, and no reloads.
    """
    figures: dict[str, Any] = {"services": lab.services, "backends": lab.services * lab.backends}
    started = time.monotonic()
    node = lab.start()
    try:
        wait_for("every backend up and every VIP in BIRD", lab.all_up, timeout=ready_timeout)
        figures["ready_s"] = time.monotonic() - started
        progress(f"ready: every backend up and {len(lab.vips)} VIPs in BIRD after {figures['ready_s']:.1f} s")
    except demo_lab.DemoError:
        figures["ready_s"] = None
        progress(f"NOT ready after {ready_timeout:g} s")

    time.sleep(settle)
    _, before = lab.metrics()
    cpu_before, window_started = cpu_seconds(node.pid), time.monotonic()
    daemon_cpu_before = cpu_seconds(node.pid, children=False)
    time.sleep(window)
    scrape_s, after = lab.metrics()
    elapsed = time.monotonic() - window_started
    figures["false_downs"] = int(
        sample_sum(after, "xdplb_backend_state_transitions_total", state="down")
        - sample_sum(before, "xdplb_backend_state_transitions_total", state="down")
    )
    figures["cpu_cores"] = (cpu_seconds(node.pid) - cpu_before) / elapsed  # checkers and ExaBGP included
    figures["cpu_daemon_cores"] = (cpu_seconds(node.pid, children=False) - daemon_cpu_before) / elapsed
    figures["check_lag_p99_ms"] = 1000 * histogram_quantile(
        before, after, "xdplb_healthcheck_schedule_lag_seconds", 0.99
    )
    figures["loop_stall_max_ms"] = 1000 * sample_sum(after, "xdplb_event_loop_stall_seconds_max")  # since start
    figures["loop_stall_steady_ms"] = 1000 * histogram_quantile(before, after, "xdplb_event_loop_stall_seconds", 1.0)
    figures["metrics_scrape_s"] = scrape_s
    figures["metrics_series"] = series_count(after)
    time.sleep(1.1)  # past the snapshot interval: the status is built for this request
    status_started = time.monotonic()
    node.status()
    figures["status_s"] = time.monotonic() - status_started
    figures["rss_mb"] = rss_bytes(node.pid) / (1 << 20)
    figures["rss_daemon_mb"] = rss_bytes(node.pid, children=False) / (1 << 20)
    figures["pss_mb"] = pss_bytes(node.pid) / (1 << 20)  # shared pages counted once, not once per process
    progress(f"steady {elapsed:.0f} s: {figures['false_downs']} false downs, {figures['cpu_cores']:.2f} cores")
    figures["backends_up"] = int(sample_sum(after, "xdplb_backend_active"))
    if figures["ready_s"] is None:
        figures.update(reload_1pct_s=None, reload_checks_s=None, reload_flaps=None)
        return _stop(lab, figures)

    # 1%: the last backend of the first services moves to a spare address
    total = lab.services * lab.backends
    moved = min(lab.spare, max(1, total // 100))

    def move(data: dict[str, Any]) -> None:
        for i in range(moved):
            data["services"][i]["backends"][-1] = {"address": backend_address(total + i)}

    _, before = lab.metrics()
    figures["reload_1pct_s"], _ = lab.reload(move)
    wait_for("the moved backends up", lab.all_up, timeout=120)

    def recheck(data: dict[str, Any]) -> None:
        data["services"][-1].pop("policy", None)
        data["services"][-1]["checks"] = [lab.check("/other")]

    figures["reload_checks_s"], _ = lab.reload(recheck)
    time.sleep(flap_window)
    _, after = lab.metrics()
    figures["reload_flaps"] = int(flaps(before, after))
    progress(
        f"reloads: 1% in {figures['reload_1pct_s']:.2f} s, checks in {figures['reload_checks_s']:.2f} s, "
        f"{figures['reload_flaps']} flaps"
    )

    return _stop(lab, figures)


def _stop(lab: ScaleLab, figures: dict[str, Any]) -> dict[str, Any]:
    stop_started = time.monotonic()
    lab.node.stop(timeout=60)
    figures["stop_s"] = time.monotonic() - stop_started
    figures["routes_left_in_bird"] = len(lab.demo.bird.routes())
    return figures


# reading the daemon's process and metrics


def cpu_seconds(pid: int, *, children: bool = True) -> float:
    """User + system CPU of process ``pid`` so far, and of its running descendants with ``children`` (one that
    exits in between takes its share with it: the figure is then low, never high)."""
    total = 0.0
    for current in _tree(pid) if children else [pid]:
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def rss_bytes(pid: int, *, children: bool = True) -> int:
    """Resident memory of ``pid``, and of all its descendants with ``children``."""
    return _memory_bytes(_tree(pid) if children else [pid], "status", "VmRSS")


def pss_bytes(pid: int) -> int:
    """Proportional memory of ``pid`` and its descendants: each shared page divided among its sharers, so the sum
    counts the libraries the daemon and its children share (Python, libc) once."""
    return _memory_bytes(_tree(pid), "smaps_rollup", "Pss")


def _memory_bytes(pids: Iterable[int], proc_file: str, field: str) -> int:
    """The sum of ``field`` (in kB) of ``/proc/<pid>/<proc_file>`` over ``pids``; a process gone meanwhile adds 0."""
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/{proc_file}").read_text()
            total += int(re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE).group(1)) * 1024  # type: ignore[union-attr]
        except (OSError, AttributeError):
            continue
    return total


def sample_sum(text: str, name: str, **labels: str) -> float:
    """The sum of every sample of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in "{ ") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def histogram_quantile(before: str, after: str, name: str, quantile: float) -> float:
    """The ``quantile`` of histogram ``name`` over the observations made between two scrapes (bucket bound)."""

    def buckets(text: str) -> dict[float, float]:
        out: dict[float, float] = {}
        for match in re.finditer(rf'^{name}_bucket{{.*?le="([^"]+)".*?}} (\S+)$', text, re.MULTILINE):
            bound = float("inf") if match.group(1) == "+Inf" else float(match.group(1))
            out[bound] = out.get(bound, 0.0) + float(match.group(2))
        return out

    first, second = buckets(before), buckets(after)
    deltas = sorted((bound, second[bound] - first.get(bound, 0.0)) for bound in second)
    if not deltas or deltas[-1][1] <= 0:
        return 0.0
    wanted = quantile * deltas[-1][1]
    return next(bound for bound, count in deltas if count >= wanted)


def flaps(before: str, after: str) -> float:
    """Health transitions between two scrapes of the backends present in both (ones a reload added are not)."""
    pattern = re.compile(r"^xdplb_backend_state_transitions_total\{(.*?)\} (\S+)$", re.MULTILINE)

    def by_labels(text: str) -> dict[str, float]:
        return {match.group(1): float(match.group(2)) for match in pattern.finditer(text)}

    first, second = by_labels(before), by_labels(after)
    backends = {re.sub(r',?state="[^"]*"', "", labels) for labels in first}
    return sum(
        value - first.get(labels, 0.0)
        for labels, value in second.items()
        if re.sub(r',?state="[^"]*"', "", labels) in backends
    )


def series_count(text: str) -> int:
    """Samples in an exposition."""
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def to_json(figures: dict[str, Any]) -> str:
    """One line of JSON, floats rounded for reading."""
    return json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()})


if __name__ == "__main__":
    sys.exit(main())
