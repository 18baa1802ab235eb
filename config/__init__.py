"""Typed configuration model of xdplb, its loading and validation."""

from config._errors import XdplbError
from config.bgp import BgpConfig, BgpPeer, RouteAttributes
from config.checks import Check, CheckTiming, DnsCheck, HttpCheck, TcpCheck, parse_status_codes

__all__ = [
    "BgpConfig",
    "BgpPeer",
    "Check",
    "CheckTiming",
    "DnsCheck",
    "HttpCheck",
    "RouteAttributes",
    "TcpCheck",
    "XdplbError",
    "parse_status_codes",
]
