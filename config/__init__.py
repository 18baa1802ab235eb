"""Typed configuration model of xdplb, its loading and validation.

>>> config = parse_config("interfaces: [eth0]\\nservices: [{vip: 192.0.2.100, port: 80, backends: [198.18.0.11]}]",
...                       source="example.yaml")
>>> service = config.services[0]
>>> service.name, config.resolved_checks(service, service.backends[0])[0].type
('192.0.2.100:80/tcp', 'tcp')
"""

from config._disclosure import redact
from config._errors import ConfigError, XdplbError
from config._incremental import IncrementalLoader
from config._logs import LOG_FORMATS, EventFormatter, configure_logging, logfmt_fields, logfmt_value
from config._loader import format_path, load_config, parse_config, validate_config
from config._root import XdplbConfig
from config._rules import is_prime
from config._service import AdminState, BackendConfig, Forwarding, PolicyConfig, ServiceConfig, vip_port_proto
from config._system import ApiConfig, DataplaneConfig, InterfaceConfig
from config._types import IpAddress, Prefix
from config.bgp import BgpConfig, BgpPeer, GracefulRestart, RouteAttributes
from config.checks import Check, CheckTiming, DnsCheck, HttpCheck, TcpCheck, parse_status_codes

__all__ = [
    "AdminState",
    "ApiConfig",
    "BackendConfig",
    "Forwarding",
    "BgpConfig",
    "BgpPeer",
    "GracefulRestart",
    "Check",
    "CheckTiming",
    "ConfigError",
    "DataplaneConfig",
    "DnsCheck",
    "EventFormatter",
    "HttpCheck",
    "IncrementalLoader",
    "InterfaceConfig",
    "IpAddress",
    "LOG_FORMATS",
    "PolicyConfig",
    "Prefix",
    "RouteAttributes",
    "ServiceConfig",
    "TcpCheck",
    "XdplbConfig",
    "XdplbError",
    "configure_logging",
    "format_path",
    "is_prime",
    "load_config",
    "logfmt_fields",
    "logfmt_value",
    "parse_config",
    "parse_status_codes",
    "redact",
    "validate_config",
    "vip_port_proto",
]
