"""The ``xdplb`` command line."""

import argparse
import sys
from importlib import metadata
from typing import Sequence

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``xdplb`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        print("xdplb demo: coming with the demo-lab issue; `make test` runs the suite meanwhile.")
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
