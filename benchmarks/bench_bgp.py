"""BGP route throughput: N /32 VIP routes announced to a real BIRD 2, then withdrawn by a clean ``stop()``.

Each round starts a fresh BIRD (IPv4 iBGP and IPv6 eBGP sessions on loopback, as in ``tests/bgp``) and a fresh
``bgp.Speaker``, waits until both sessions are Established on both sides, and then times:

- ``announce``: from handing the speaker the N routes (``set_routes``) until ``birdc show route count`` shows all N;
- ``stop``: ``await speaker.stop()`` (withdraw every route, wait until ExaBGP reports them sent, close the sessions,
  end ExaBGP), and until BIRD shows none (it shows none as soon as ``stop()`` returns).

    make bench-bgp
    .venv/bin/python benchmarks/bench_bgp.py --routes 1000 --rounds 3

Every round runs twice: on an idle event loop, and on a busy one (``--busy-ms``: a task that blocks the loop for that
long, then yields for as long, as a daemon busy with health checks would), since each round trip to ExaBGP costs the
speaker a turn of the loop. ``birdc`` takes about 2 ms a call, which bounds the resolution. The last line is one
JSON object with the medians.
Target (issue 9): withdrawing 250 routes at stop takes well under a second.
"""

import argparse
import asyncio
import ipaddress
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bgp  # noqa: E402
import config  # noqa: E402
from balancer.lab import bird_lab  # noqa: E402

LOCAL_AS = 4200000001
BIRD_AS_V6 = 65002
SPEAKER_V4 = ipaddress.ip_address("127.0.0.2")
LOOPBACK_V4 = ipaddress.ip_address("127.0.0.1")
LOOPBACK_V6 = ipaddress.ip_address("::1")


def _bird_peers() -> list[bird_lab.BirdPeer]:
    return [
        bird_lab.BirdPeer(name="xdplb4", address=SPEAKER_V4, peer_as=LOCAL_AS),
        bird_lab.BirdPeer(name="xdplb6", address=LOOPBACK_V6, peer_as=LOCAL_AS, local_as=BIRD_AS_V6),
    ]


def _speaker_config(bird: bird_lab.BirdLab) -> config.BgpConfig:
    return config.BgpConfig(
        local_as=LOCAL_AS,
        router_id=ipaddress.IPv4Address("192.0.2.1"),
        peers=(
            config.BgpPeer(address=LOOPBACK_V4, peer_as=LOCAL_AS, local_address=SPEAKER_V4, port=bird.port),
            config.BgpPeer(address=LOOPBACK_V6, peer_as=BIRD_AS_V6, local_address=LOOPBACK_V6, port=bird.port),
        ),
    )


def _route_count(bird: bird_lab.BirdLab) -> int:
    """Routes in every table, from ``show route count`` ("Total: 250 of 250 routes for 250 networks in 2 tables")."""
    for line in bird.birdc("show", "route", "count").splitlines():
        if line.startswith("Total:"):
            return int(line.split()[1])
    return 0


async def _until(probe: Callable[[], object], *, timeout: float = 60.0) -> float:
    """Poll ``probe`` every 2 ms; the monotonic time at which it first held."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met within {timeout}s")
        await asyncio.sleep(0.002)
    return time.monotonic()


def _established(speaker: bgp.Speaker, bird: bird_lab.BirdLab) -> bool:
    ours = all(state.state is bgp.PeerStatus.ESTABLISHED for state in speaker.peers().values())
    return ours and all(p.bgp_state == "Established" for p in bird.protocols().values() if p.proto == "BGP")


async def _hog(busy: float) -> None:
    """Block the event loop for ``busy`` seconds, yield for as long, forever."""
    while True:
        time.sleep(busy)
        await asyncio.sleep(busy)


async def _round(routes: int, busy: float) -> dict[str, float]:
    prefixes = [ipaddress.IPv4Network((0xC6120000 + i, 32)) for i in range(routes)]  # 198.18.0.0 on
    attributes = config.RouteAttributes(med=100, communities=("65000:1",))
    with bird_lab.BirdLab(peers=_bird_peers()) as bird:
        speaker = bgp.Speaker(_speaker_config(bird))
        hog: asyncio.Task[None] | None = None
        await speaker.start()
        try:
            await _until(lambda: _established(speaker, bird), timeout=30)
            hog = asyncio.create_task(_hog(busy)) if busy else None
            start = time.monotonic()
            speaker.set_routes(dict.fromkeys(prefixes, attributes))
            handed = time.monotonic()
            visible = await _until(lambda: _route_count(bird) == routes)
            stop_start = time.monotonic()
            await speaker.stop()
            stopped = time.monotonic()
            gone = await _until(lambda: _route_count(bird) == 0)
        finally:
            if hog is not None:
                hog.cancel()
            await speaker.stop()
    return {
        "announce_call_s": handed - start,
        "announce_visible_s": visible - start,
        "stop_s": stopped - stop_start,
        "withdrawn_gone_s": gone - stop_start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=250, help="/32 routes to announce and withdraw")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per loop state (the median is reported)")
    parser.add_argument("--busy-ms", type=float, default=20.0, help="loop stalls of the busy rounds (0: skip them)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    loads = {"idle": 0.0, **({f"busy{args.busy_ms:g}ms": args.busy_ms / 1000} if args.busy_ms else {})}
    medians: dict[str, dict[str, float]] = {}
    for load, busy in loads.items():
        rounds = [asyncio.run(_round(args.routes, busy)) for _ in range(args.rounds)]
        columns = list(rounds[0])
        print(f"{load:<12}" + "".join(f"{c:>20}" for c in columns))
        for i, figures in enumerate(rounds, 1):
            print(f"{'  round ' + str(i):<12}" + "".join(f"{figures[c] * 1000:>18.1f}ms" for c in columns))
        medians[load] = {c: statistics.median(r[c] for r in rounds) for c in columns}
        print(f"{'  median':<12}" + "".join(f"{medians[load][c] * 1000:>18.1f}ms" for c in columns))
    print("# announce_call: until set_routes() returned; announce_visible: until BIRD shows every route;")
    print("# stop: speaker.stop() (withdraw all, drain, close); withdrawn_gone: until BIRD shows none.")
    print(f"# busy: the loop blocked {args.busy_ms:g} ms, then free {args.busy_ms:g} ms, over and over.")
    summary: dict[str, object] = {"routes": args.routes, "rounds": args.rounds}
    for load, figures in medians.items():
        prefix = "" if load == "idle" else "busy_"
        summary.update({prefix + key: round(value, 4) for key, value in figures.items()})
    summary["busy_ms"] = args.busy_ms
    summary["target"] = {"stop_s": "well under 1"}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
