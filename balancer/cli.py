"""The ``xdplb`` command line."""

import argparse
import json
import sys
from importlib import metadata
from typing import Sequence

import config
from balancer import status_table

__all__ = ["main"]


def _version() -> str:
    try:
        return metadata.version("xdplb")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="xdplb", description="XDP layer-4 load balancer with BGP route health injection.")
    parser.add_argument("--version", action="version", version=f"xdplb {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("demo", help="run the namespace demo lab (coming with the lab issue)")
    check = sub.add_parser("check", help="validate a configuration file without touching the system")
    check.add_argument("config", metavar="CONFIG", help="YAML (or .json) configuration file")
    show = sub.add_parser("status", help="show VIPs, services, backends and BGP peers of a running daemon")
    where = show.add_mutually_exclusive_group()
    where.add_argument("--api", metavar="URL",
                       help=f"base URL of the daemon's API (default {status_table.DEFAULT_URL})")
    where.add_argument("--config", metavar="CONFIG", help="take the API address from this configuration's api.listen")
    show.add_argument("--rate", metavar="SECONDS", type=float, default=0.0,
                      help="sample twice, SECONDS apart, and show packets per second instead of totals")
    show.add_argument("--json", action="store_true", help="print the status JSON as the API returns it")
    return parser


def _check(path: str) -> int:
    """``xdplb check CONFIG``: 0 and a summary on stdout, or 1 and one line per problem on stderr."""
    try:
        loaded = config.load_config(path)
    except config.ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    backends = sum(len(service.backends) for service in loaded.services)
    vips = len({vip for service in loaded.services for vip in service.vips})
    print(f"OK: {len(loaded.services)} services, {backends} backends, {vips} VIPs")
    return 0


def _status(api: str | None, config_path: str | None, rate: float, as_json: bool) -> int:
    """``xdplb status``: 0 and the tables on stdout, or 1 and why on stderr."""
    if api is None and config_path is not None:
        try:
            api = status_table.api_url(config.load_config(config_path))
        except config.ConfigError as error:
            print(error, file=sys.stderr)
            return 1
    try:
        latest, earlier = status_table.sample(api or status_table.DEFAULT_URL, rate_seconds=rate)
    except status_table.StatusUnavailable as error:
        print(f"xdplb status: {error}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(latest, indent=2))
        return 0
    try:
        table = status_table.render(latest, earlier)
    except (KeyError, TypeError, ValueError) as error:  # another version's API: say so rather than a traceback
        print(f"xdplb status: unexpected status format ({error!r}); try --json", file=sys.stderr)
        return 1
    print(table, end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``xdplb`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        print("xdplb demo: coming with the demo-lab issue; `make test` runs the suite meanwhile.")
        return 0
    if args.command == "check":
        return _check(args.config)
    if args.command == "status":
        return _status(args.api, args.config, args.rate, args.json)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
