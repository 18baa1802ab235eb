"""Health-check throughput: N HTTP backends through the real scheduler, lean checker vs aiohttp checker.

``lean`` runs plain HTTP checks on bare sockets from the scheduler's timers, a new connection per check;
``lean-keepalive`` the same with ``keepalive: true`` (one connection per backend, reused); ``lean-protocol`` is the
lean checker on its asyncio-protocol path in a task per check (what HTTPS checks take), for comparison.

Loopback HTTP servers run in a separate process; each variant (HTTP engine x event loop) runs in a fresh checking
process that offers the same load (N backends, one check each every ``interval`` seconds) for a bounded time and
count. Reported per variant: checks per CPU-second of the checking process (user + system), checks per wall
second, failures, and the lag between each check's due time and its actual start (p50/p99/max).

    make bench-healthchecks
    .venv/bin/python benchmarks/bench_healthchecks.py --backends 2000 --interval 0.5 --duration 8

The last line is one JSON object: ``checks_per_cpu_second`` and ``lag_p99_ms`` are those of the default
configuration (lean checker on uvloop); ``variants`` holds every variant's figures.
Target (the issue): 5,000 HTTP checks per CPU-second with p99 lag under 50 ms.
"""

import argparse
import asyncio
import ipaddress
import json
import os
import resource
import subprocess
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
KEPT_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
SERVER_LIFETIME = 900.0  # seconds: the server process ends by itself even if nobody tells it to
VARIANTS = [
    "lean/uvloop",
    "lean-keepalive/uvloop",
    "lean-protocol/uvloop",
    "aiohttp/uvloop",
    "lean/asyncio",
    "aiohttp/asyncio",
]


# --- the server process ------------------------------------------------------------------------------------------


class _HttpServer(asyncio.Protocol):
    """Answers each request with a fixed 200; closes after one that asks to close."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if b"\r\n\r\n" in self.buf and self.transport is not None:
            request, _, self.buf = self.buf.partition(b"\r\n\r\n")
            if b"connection: close" in request.lower():
                self.transport.write(RESPONSE)
                self.transport.close()
            else:
                self.transport.write(KEPT_RESPONSE)


async def _serve(ports: int) -> None:
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(_HttpServer, "127.0.0.1", 0, backlog=4096) for _ in range(ports)]
    print(json.dumps([s.sockets[0].getsockname()[1] for s in servers]), flush=True)
    stop = asyncio.Event()
    # Stop when the parent closes our stdin (also when it dies), or after SERVER_LIFETIME.
    threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)), daemon=True).start()
    try:
        await asyncio.wait_for(stop.wait(), SERVER_LIFETIME)
    except TimeoutError:
        pass
    for server in servers:
        server.close()


# --- a checking process ------------------------------------------------------------------------------------------


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _check(engine: str, ports: list[int], args: argparse.Namespace) -> dict[str, Any]:
    import config
    import healthchecks

    if engine == "lean-protocol":
        # The lean checker on its asyncio-protocol path (what HTTPS and keep-alive checks take), each check in a
        # task: the baseline of its bare-socket path. This process checks only this variant, so the patch stays here.
        from healthchecks import _checker

        make = _checker.make_checker

        def protocol_path(*args: Any, **kwargs: Any) -> _checker.Checker:
            checker = make(*args, **kwargs)
            checker.bare = False  # type: ignore[attr-defined]
            return checker

        _checker.make_checker = protocol_path
        engine = "lean"
    keepalive = engine == "lean-keepalive"
    if keepalive:
        engine = "lean"

    timing = {"interval": args.interval, "timeout": min(args.timeout, args.interval), "rise": 2, "fall": 3}
    check = config.HttpCheck.model_validate({"path": "/health", "timing": timing, "keepalive": keepalive})
    address = ipaddress.IPv4Address("127.0.0.1")
    targets = [
        healthchecks.Target(key=f"b{i}", address=address, port=ports[i % len(ports)], checks=(check,))
        for i in range(args.backends)
    ]
    measuring = False
    lags: list[float] = []
    failures: dict[str, int] = {}
    done = asyncio.Event()

    def ran(run: healthchecks.CheckRun) -> None:
        if not measuring:
            return
        lags.append(run.lag)
        if not run.result.ok:
            failures[run.result.reason] = failures.get(run.result.reason, 0) + 1
        if len(lags) >= args.max_checks:
            done.set()

    async with healthchecks.Scheduler(http_engine=engine, on_check=ran, seed=1) as scheduler:  # type: ignore[arg-type]
        scheduler.update(targets)
        await asyncio.sleep(args.warmup)  # every backend has had its (jittered) first check
        measuring = True
        cpu0, wall0 = _cpu(), time.monotonic()
        try:
            await asyncio.wait_for(done.wait(), args.duration)
        except TimeoutError:
            pass
        measuring = False
        cpu, wall = _cpu() - cpu0, time.monotonic() - wall0
        states = scheduler.states()
        up = sum(1 for health in states.values() if health.state is healthchecks.HealthState.UP)
    lags.sort()
    count = len(lags)

    def pct(p: float) -> float:
        return round(lags[min(count - 1, int(p * count))] * 1000, 2) if count else float("nan")

    return {
        "checks": count,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "checks_per_second": round(count / wall),
        "checks_per_cpu_second": round(count / cpu) if cpu else None,
        "cpu_utilisation": round(cpu / wall, 2),
        "lag_p50_ms": pct(0.50),
        "lag_p99_ms": pct(0.99),
        "lag_max_ms": round(lags[-1] * 1000, 2) if count else None,
        "failures": sum(failures.values()),
        "failure_reasons": dict(sorted(failures.items(), key=lambda item: -item[1])[:3]),
        "backends_up": up,
    }


def _run_checker(variant: str, ports: list[int], args: argparse.Namespace) -> dict[str, Any]:
    engine, loop_name = variant.split("/")
    if loop_name == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_check(engine, ports, args))
    return asyncio.run(_check(engine, ports, args))


# --- the driver --------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", type=int, default=2000, help="backends checked (default 2000)")
    parser.add_argument("--ports", type=int, default=50, help="loopback server ports they spread over (50)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between checks of a backend (0.5)")
    parser.add_argument("--timeout", type=float, default=0.5, help="check timeout, at most the interval (0.5)")
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per variant (8, max 60)")
    parser.add_argument("--warmup", type=float, default=1.5, help="seconds before measuring (1.5)")
    parser.add_argument("--max-checks", type=int, default=200_000, help="stop measuring a variant after this many")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {VARIANTS}")
    parser.add_argument("--serve", type=int, metavar="PORTS", help=argparse.SUPPRESS)
    parser.add_argument("--check", metavar="VARIANT", help=argparse.SUPPRESS)
    parser.add_argument("--server-ports", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.duration = min(args.duration, 60.0)
    args.backends = min(args.backends, 20_000)

    if args.serve:
        try:
            import uvloop

            uvloop.run(_serve(args.serve))
        except ImportError:
            asyncio.run(_serve(args.serve))
        return
    if args.check:
        print(json.dumps(_run_checker(args.check, json.loads(args.server_ports), args)), flush=True)
        return

    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}")
    me = os.path.abspath(__file__)
    server = subprocess.Popen([sys.executable, me, "--serve", str(args.ports)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    results: dict[str, dict[str, Any]] = {}
    try:
        assert server.stdout is not None
        ports = json.loads(server.stdout.readline())
        common = [f"--{name.replace('_', '-')}={getattr(args, name)}"
                  for name in ("backends", "interval", "timeout", "duration", "warmup", "max_checks")]  # fmt: skip
        print(
            f"# {args.backends} HTTP backends over {len(ports)} loopback ports, a check each every {args.interval}s "
            f"(offered {args.backends / args.interval:.0f} checks/s), {args.duration}s measured per variant",
            flush=True,
        )
        for variant in variants:
            out = subprocess.run(
                [sys.executable, me, "--check", variant, "--server-ports", json.dumps(ports), *common],
                capture_output=True, text=True, timeout=args.warmup + args.duration + 60,
            )  # fmt: skip
            if out.returncode != 0:
                print(f"# {variant} failed:\n{out.stderr}", file=sys.stderr)
                continue
            results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()

    columns = ["checks", "checks_per_second", "cpu_utilisation", "checks_per_cpu_second", "lag_p50_ms", "lag_p99_ms",
               "lag_max_ms", "failures", "backends_up"]  # fmt: skip
    print(f"{'':24}" + "".join(f"{v:>17}" for v in results))
    for column in columns:
        print(f"{column:24}" + "".join(f"{str(r[column]):>17}" for r in results.values()))
    print("# lag: from a check's due time to its start. The servers always answer 200, so failures (timeouts) mean")
    print("# the checking process could not keep up; a timed-out check is rescheduled from its end, so lag hides it.")
    for variant, figures in results.items():
        if figures["failure_reasons"]:
            print(f"# {variant} failure reasons: {figures['failure_reasons']}")
    main_figures = results.get("lean/uvloop") or next(iter(results.values()), {})
    summary = {
        "checks_per_cpu_second": main_figures.get("checks_per_cpu_second"),
        "lag_p99_ms": main_figures.get("lag_p99_ms"),
        "checks_per_second": main_figures.get("checks_per_second"),
        "variant": "lean/uvloop" if "lean/uvloop" in results else next(iter(results), None),
        "backends": args.backends,
        "interval_s": args.interval,
        "target": {"checks_per_cpu_second": 5000, "lag_p99_ms": 50},
        "variants": results,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
