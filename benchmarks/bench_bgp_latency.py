"""Measure announce -> visible in BIRD, withdraw -> gone, and controller SIGKILL -> gone (not a test).

Run: .venv/bin/python benchmarks/bench_bgp_latency.py [ROUNDS] (``make bench-bgp`` measures throughput instead)
Each time runs from before the ``announce``/``withdraw`` call (so it includes ExaBGP's ack) until ``birdc`` shows
the change; ``birdc`` itself takes about 2 ms a call, which bounds the resolution.
"""

import asyncio
import ipaddress
import logging
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bgp  # noqa: E402
import config  # noqa: E402
from balancer.lab import bird_lab  # noqa: E402
from tests.bgp import bgp_support  # noqa: E402


async def _until(probe: Callable[[], object], timeout: float = 10.0) -> float:
    start = time.monotonic()
    while not probe():
        if time.monotonic() - start > timeout:
            raise TimeoutError
        await asyncio.sleep(0)
    return time.monotonic()


def _summary(name: str, values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
    return f"{name}: n={len(ms)} median={statistics.median(ms):.1f}ms p90={p90:.1f}ms max={ms[-1]:.1f}ms"


async def main(rounds: int) -> None:
    with bird_lab.BirdLab(peers=bgp_support.bird_peers()) as bird:
        cfg = bgp_support.speaker_config(bird)
        async with bgp.Speaker(cfg, restart_delay=0.5, max_restart_delay=0.5) as speaker:
            await _until(lambda: bgp_support.established(speaker) and bgp_support.bird_established(bird))
            announce, withdraw = [], []
            for i in range(rounds):
                prefix = ipaddress.ip_network(f"198.18.{i // 256}.{i % 256}/32")
                start = time.monotonic()
                await speaker.announce(prefix, config.RouteAttributes(med=i))
                announce.append(await _until(lambda: bird.route(prefix)) - start)
                start = time.monotonic()
                await speaker.withdraw(prefix)
                withdraw.append(await _until(lambda: bird.route(prefix) is None) - start)
            gone, back = [], []
            prefix = ipaddress.ip_network("192.0.2.41/32")
            await speaker.announce(prefix, config.RouteAttributes())
            for _ in range(max(3, rounds // 20)):
                await _until(lambda: bird.route(prefix))
                pid = speaker.exabgp_pid
                assert pid is not None
                start = time.monotonic()
                os.kill(pid, signal.SIGKILL)
                gone.append(await _until(lambda: bird.route(prefix) is None) - start)
                back.append(await _until(lambda: bird.route(prefix)) - start)
        print(_summary("announce->visible", announce))
        print(_summary("withdraw->gone", withdraw))
        print(_summary("exabgp SIGKILL->gone", gone))
        print(_summary("exabgp SIGKILL->back (restart_delay=0.5s, replay)", back))
        kills = []
        for _ in range(max(3, rounds // 10)):
            controller_prefix = "192.0.2.40/32"
            controller = await asyncio.create_subprocess_exec(
                sys.executable,
                str(ROOT / "tests" / "bgp" / "bgp_controller.py"),
                str(bird.workdir),
                bgp_support.speaker_config(bird).model_dump_json(),
                controller_prefix,
                stdout=asyncio.subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            assert controller.stdout is not None
            while (await controller.stdout.readline()) != b"ready\n":
                pass
            await _until(lambda: bird.route(controller_prefix))
            start = time.monotonic()
            controller.kill()
            kills.append(await _until(lambda: bird.route(controller_prefix) is None) - start)
            await controller.wait()
            await _until(lambda: not any(p.bgp_state == "Established" for p in bird.protocols().values()))
        print(_summary("controller SIGKILL->gone", kills))


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)  # the expected exabgp_exited warnings would interleave
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50))
