"""The control plane at the size of a real edge: ``make bench-scale``.

Builds the scale lab (``balancer.lab.scale``): by default 1,000 services (250 VIPs x 4 ports) x 10 backends, all
answering HTTP 200 from one server, checks every 2 s (timeout 1 s, rise 2, fall 3), BIRD as the BGP peer, and
permanent neighbour entries on the node (the host's neighbour-table limits are shared and not ours to raise).
Runs the real ``xdplb run`` and prints the figures against their targets, then one JSON object on the last line.
"""

import argparse
import sys

from balancer.lab import scale

TARGETS = {  # key: (target, "max" or "eq")
    "ready_s": (15.0, "max"),
    "false_downs": (0, "eq"),
    "cpu_cores": (0.6, "max"),
    "check_lag_p99_ms": (50.0, "max"),
    "loop_stall_max_ms": (50.0, "max"),
    "reload_1pct_s": (1.0, "max"),
    "reload_checks_s": (1.0, "max"),
    "reload_flaps": (0, "eq"),
    "metrics_scrape_s": (0.5, "max"),
    "status_s": (0.5, "max"),
    "rss_mb": (300.0, "max"),
    "stop_s": (4.0, "max"),  # 3 s plus the node's 1 s drain
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--backends", type=int, default=10, help="per service")
    parser.add_argument("--window", type=float, default=60.0, help="seconds of steady state measured")
    parser.add_argument("--ready-timeout", type=float, default=300.0, help="seconds allowed to get every backend up")
    parser.add_argument("--keepalive", action="store_true", help="HTTP checks reuse their connections")
    args = parser.parse_args()
    total = args.services * args.backends
    with scale.ScaleLab(
        services=args.services, backends=args.backends, spare=max(1, total // 100), keepalive=args.keepalive
    ) as lab:
        figures = scale.measure(
            lab,
            window=args.window,
            settle=10.0,
            flap_window=30.0,
            ready_timeout=args.ready_timeout,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
    print(f"{'figure':22} {'measured':>12} {'target':>10}")
    for name, value in figures.items():
        target = TARGETS.get(name)
        mark = ""
        if target is not None and value is None:
            mark = "not measured  MISSED"
        elif target is not None:
            limit, kind = target
            ok = value <= limit if kind == "max" else value == limit
            mark = f"{'<=' if kind == 'max' else '=='} {limit:<7} {'ok' if ok else 'MISSED'}"
        shown = f"{value:.3f}" if isinstance(value, float) else ("-" if value is None else str(value))
        print(f"{name:22} {shown:>12}   {mark}")
    print(scale.to_json(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
