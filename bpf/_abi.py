"""Constants shared with the C program, read from ``xdplb.h`` itself so the two cannot drift apart."""

import re
from pathlib import Path

__all__ = ["ABI", "HEADER", "PROGRAM", "header_defines"]

HEADER = Path(__file__).with_name("xdplb.h")
PROGRAM = Path(__file__).with_name("xdplb.c")
_DEFINE = re.compile(r"^#define\s+([A-Z0-9_]+)\s+(\d+)\b", re.MULTILINE)


def header_defines() -> dict[str, int]:
    """Every ``#define NAME <integer>`` of the header, e.g. ``{"SERVICE_STICKY": 1, ...}``."""
    return {name: int(value) for name, value in _DEFINE.findall(HEADER.read_text())}


_DEFINES = header_defines()
ABI = _DEFINES["XDPLB_ABI"]
SERVICE_STICKY = _DEFINES["SERVICE_STICKY"]
BACKEND_USABLE = _DEFINES["BACKEND_USABLE"]
BACKEND_IPIP = _DEFINES["BACKEND_IPIP"]
BACKEND_GUE = _DEFINES["BACKEND_GUE"]
