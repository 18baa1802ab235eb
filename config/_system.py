"""Sections about the host itself: the interfaces XDP attaches to, data-plane sizing, and the API listener."""

import ipaddress
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from config import _types
from config._base import XdplbModel

__all__ = ["ApiConfig", "DataplaneConfig", "InterfaceConfig", "parse_listen"]

_IFNAME = re.compile(r"^[^/\s:]{1,15}$")  # the kernel's IFNAMSIZ is 16 with the NUL


class InterfaceConfig(XdplbModel):
    """One interface the XDP program attaches to; a plain string ``eth0`` is short for ``{name: eth0}``."""

    name: str = Field(description="interface name, as `ip link` shows it (at most 15 characters)")
    mode: Literal["auto", "native", "generic"] = Field(
        "auto", description="XDP attach mode: `native` (driver), `generic` (skb), or `auto` (native, else generic)"
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: object) -> object:
        return {"name": data} if isinstance(data, str) else data

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _IFNAME.match(value) or value in (".", ".."):
            raise ValueError(f"bad interface name {value!r}: 1 to 15 characters, no '/', ':' or white space")
        return value


class DataplaneConfig(XdplbModel):
    """Sizing and hashing of the XDP data plane; the same on every node of an anycast group."""

    flow_table_size: int = Field(
        65536,
        ge=1024,
        le=16777216,
        strict=True,
        description="flow-table entries (connections remembered; LRU within sets of 4, shared by all CPUs)",
    )
    hash_seed: int = Field(
        0,
        ge=0,
        le=4294967295,
        strict=True,
        description="seed of the hash that picks a new connection's Maglev entry, so its backend; keep it the same on "
        "every node so all nodes pick the same backend (the flow table's own index hash is seeded at random per load)",
    )
    new_flow_rate_limit: int = Field(
        125000,
        ge=0,
        strict=True,
        description="new flows per CPU per second inserted into the flow table; above it they are forwarded "
        "without being remembered (flood guard); 0 means no limit",
    )
    max_services: int = Field(
        4096,
        ge=1,
        le=65536,
        strict=True,
        description="data-plane services, one per (VIP, port, protocol); sizes the maps",
    )
    max_backends: int = Field(
        16384,
        ge=2,
        le=1048576,
        strict=True,
        description="backend slots, one per (VIP, port, protocol) and real server, plus one kept unused",
    )
    answer_ping: bool = Field(
        True,
        strict=True,
        description="answer ICMP and ICMPv6 echo requests (ping) to a VIP address in XDP; false leaves them to the "
        "kernel",
    )
    tunnel_source_v4: _types.IPv4HostAddress | None = Field(
        None,
        description="outer source address of IPv4 tunnels (`forwarding: ipip|gue`): an address of this node "
        "that the backends' replies to it could be routed back to",
    )
    tunnel_source_v6: _types.IPv6HostAddress | None = Field(
        None,
        description="outer source address of IPv6 tunnels",
    )
    gue_port: _types.Port = Field(6080, description="outer UDP destination port of GUE (the backends' decap port)")

    def memory_bytes(self, tables: int) -> int:
        """Kernel memory the maps need, in bytes, for ``tables`` Maglev entries in use (each 8 bytes, twice while
        a table is being replaced), with the flow table, backends and per-CPU counters at these sizes."""
        cpus = os.cpu_count() or 1
        flows = self.flow_table_size * (32 + 56)  # an IPv4 and an IPv6 entry per flow-table row
        backends = self.max_backends * (24 + 20 + (24 + 32) * cpus)  # entry, tunnel address, per-CPU counters and
        # next hop
        services = self.max_services * (2 * 64 + 32 * cpus)  # v4/v6 hash entries and per-CPU counters
        return 2 * 8 * tables + flows + backends + services


def parse_listen(text: str) -> tuple[_types.IpAddress, int]:
    """The address and port of ``"127.0.0.1:9180"`` or ``"[::1]:9180"``; ValueError says what is wrong."""
    match = re.fullmatch(r"\[([^\]]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", text.strip())
    if match is None:
        hint = "; write an IPv6 address in brackets, [::1]:9180" if text.count(":") > 1 else ""
        raise ValueError(f"bad listen address {text!r}: expected ADDRESS:PORT such as 127.0.0.1:9180{hint}")
    host, port = (match[1], match[2]) if match[1] is not None else (match[3], match[4])
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"bad listen address {text!r}: {host!r} is not an IP address (names are not accepted)"
        ) from None
    try:
        _types.plain_address(address)
    except ValueError as error:
        raise ValueError(f"bad listen address {text!r}: {error}") from None
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"bad listen address {text!r}: port {port} is not in 1..65535")
    return address, int(port)


class ApiConfig(XdplbModel):
    """The HTTP listener of the JSON API, the web console and Prometheus ``/metrics``."""

    listen: str = Field("127.0.0.1:9180", description="ADDRESS:PORT, IPv6 in brackets: `[::1]:9180`")
    token_file: Path | None = Field(
        None,
        description="file holding the bearer token that write requests must present; "
        "required when `listen` is not a loopback address",
    )
    read_token_required: bool = Field(
        False,
        description="read endpoints (status, config, metrics, console) also require the token of `token_file`",
    )
    idle_timeout: float = Field(
        15.0,
        gt=0,
        le=3600,
        description="seconds a connection may stay without a complete request: from connecting to the end of the "
        "first request's headers (slow or unfinished headers), and between requests; then it is closed. Read at "
        "start",
    )
    max_connections: int = Field(
        512,
        ge=1,
        le=1048576,
        description="open API connections at most; one more is reset at once. Never more than the open-file limit "
        "less `fd_reserve`",
    )
    max_connections_per_client: int = Field(
        64, ge=1, le=1048576, description="open API connections at most from one client address"
    )
    fd_reserve: int = Field(
        256,
        ge=16,
        le=1048576,
        description="file descriptors the API leaves to health checks, BGP and the data plane, plus one per "
        "configured check: API connections are capped at the open-file limit less these",
    )

    @field_validator("token_file", mode="before")
    @classmethod
    def _token_file(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            raise ValueError("empty: give the path of the token file, or leave token_file unset")
        return value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_listen(value)
        return value.strip()

    @model_validator(mode="after")
    def _apply_rules(self) -> "ApiConfig":
        _types.raise_problems("ApiConfig", verify_api_token(self))
        return self

    @property
    def host(self) -> _types.IpAddress:
        """The address to listen on."""
        return parse_listen(self.listen)[0]

    @property
    def port(self) -> int:
        """The TCP port to listen on."""
        return parse_listen(self.listen)[1]


def verify_api_token(api: ApiConfig) -> list[_types.Problem]:
    """An API reachable from other hosts must require a token, and so must read endpoints that want one."""
    if api.token_file is None and not api.host.is_loopback:
        return [(("token_file",), f"required because listen {api.listen} is not a loopback address")]
    if api.token_file is None and api.read_token_required:
        return [(("token_file",), "required because read_token_required is true")]
    return []
