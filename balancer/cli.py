"""The ``xdplb`` command line."""

import argparse
import sys
from importlib import metadata
from typing import Sequence

import config

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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``xdplb`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        print("xdplb demo: coming with the demo-lab issue; `make test` runs the suite meanwhile.")
        return 0
    if args.command == "check":
        return _check(args.config)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
