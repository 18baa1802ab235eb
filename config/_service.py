"""A service (VIPs, port, protocol) and its backends, and the named check policies they refer to."""

import enum
import re
from typing import Literal

from pydantic import AliasChoices, Field, PrivateAttr, field_validator, model_validator

from config import _rules, _types
from config._base import XdplbModel
from config.bgp import RouteAttributes
from config.checks import Check

__all__ = ["AdminState", "BackendConfig", "PolicyConfig", "ServiceConfig", "vip_port_proto"]

_NAME = re.compile(r"^[A-Za-z0-9_.:/@\[\]-]{1,128}$")

_CHECKS_DESCRIPTION = (
    "health checks as written here; unset means inherit (see Check inheritance). "
    "`[]` runs none: the backend counts as healthy while its state is enabled. "
    "The effective list is `XdplbConfig.resolved_checks(service, backend)`"
)


class AdminState(enum.StrEnum):
    """What the operator wants of a backend, whatever its health."""

    ENABLED = "enabled"
    """Takes new flows when healthy."""
    DRAINED = "drained"
    """Takes no new flows; flows it already has stay with it. Checks keep running."""
    DISABLED = "disabled"
    """Out of the table: its flows move to other backends. Checks do not run."""


class PolicyConfig(XdplbModel):
    """A named set of health checks that services and backends refer to with `policy: NAME`."""

    checks: tuple[Check, ...] = Field(description="the checks; a backend is healthy when all of them pass")


Forwarding = Literal["l2", "ipip", "gue"]


class BackendConfig(XdplbModel):
    """A real server; a plain string ``198.18.0.11`` is short for ``{address: 198.18.0.11}``."""

    address: _types.HostAddress = Field(
        description="the backend's own address: health checks go to it, and its MAC (learnt by ARP/ND on the "
        "interface or VLAN) is where packets for the VIP are sent (layer-2 direct server return)"
    )
    weight: int = Field(
        1, ge=0, le=65535, strict=True, description="share of new flows relative to the other backends; 0 drains"
    )
    state: AdminState = Field(
        AdminState.ENABLED,
        description="`enabled`; `drained` (no new flows, existing ones stay); `disabled` (removed, no checks)",
    )
    vlan: int | None = Field(
        None,
        ge=1,
        le=4094,
        strict=True,
        description="802.1Q tag to send its packets with (a VLAN of a trunk interface); unset: untagged",
    )
    interface: str | None = Field(
        None,
        description="the attached interface the backend is on (one of `interfaces`), where its MAC is looked up "
        "and its packets leave (XDP_REDIRECT when it is not the one they came in on); unset: learnt, the interface "
        "of its neighbour entry (the lowest-numbered attached one that has an entry)",
    )
    forwarding: Forwarding | None = Field(
        None, description="how its packets get there, as the service's `forwarding`; unset: the service's"
    )
    policy: str | None = Field(None, description="name of a policy whose checks to run")
    checks: tuple[Check, ...] | None = Field(None, description=_CHECKS_DESCRIPTION)

    # str(address) once: keys, labels and lookups ask for it many times per backend (ipaddress takes 4 us each time)
    _address_text: str = PrivateAttr("")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: object) -> object:
        return {"address": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _apply_rules(self) -> "BackendConfig":
        _types.raise_problems("BackendConfig", _rules.verify_policy_or_checks(self))
        self._address_text = str(self.address)
        return self

    @property
    def address_text(self) -> str:
        """``str(address)``, made once."""
        private = self.__pydantic_private__  # a slot: reading _address_text through pydantic's __getattr__ is slower
        return (private or {}).get("_address_text") or str(self.address)


def vip_port_proto(vip: _types.IpAddress | str, port: int, protocol: str) -> str:
    """``192.0.2.100:80/tcp``, ``[2001:db8::100]:53/udp``: what a service listens on, as xdplb writes it (the name
    of a service that has none, a data-plane ``ServiceKey``, a row of ``xdplb status``)."""
    host = str(vip)
    return f"[{host}]:{port}/{protocol}" if ":" in host else f"{host}:{port}/{protocol}"


def _name_from_raw(data: dict[str, object]) -> str | None:
    """The default name from the document as written (a before-validator: the model is frozen once built)."""
    vips = data.get("vips", data.get("vip"))
    first = vips if isinstance(vips, str) else next(iter(vips), None) if isinstance(vips, list | tuple) else None
    port, protocol = data.get("port"), data.get("protocol", "tcp")
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if not isinstance(port, int) or isinstance(port, bool) or protocol not in ("tcp", "udp"):
        return None
    try:
        vip = _types.host_address(first)
    except ValueError:
        return None
    return vip_port_proto(vip, port, str(protocol))


class ServiceConfig(XdplbModel):
    """One or more VIPs on one port and protocol, balanced over a set of backends with Maglev hashing."""

    name: str = Field(
        "",
        description='label in logs, metrics and the API; unique; default "VIP:PORT/PROTOCOL" of the first VIP',
    )
    vips: tuple[_types.HostAddress, ...] = Field(
        min_length=1,
        validation_alias=AliasChoices("vips", "vip"),
        description="addresses clients connect to, each announced as a /32 or /128 (`vip: ADDRESS` for one)",
    )
    port: _types.Port = Field(description="destination port")
    protocol: Literal["tcp", "udp"] = Field("tcp", description="`tcp` or `udp`")
    sticky: bool = Field(
        False,
        strict=True,
        description="hash on the client and VIP addresses only, so a client sticks to a backend on every port",
    )
    table_size: int = Field(
        16381,
        ge=7,
        le=1048573,
        strict=True,
        description="Maglev lookup table size; must be prime, and about 100 times the backends or more for even "
        "shares. Memory: 8 bytes x size (the kernel's array stride), twice while it is replaced: 128 KiB at the default",
    )
    need: int = Field(
        1,
        ge=0,
        strict=True,
        description="healthy enabled backends needed for the VIPs to be announced over BGP; 0 announces them "
        "regardless; more than the backends listed is an error",
    )
    bgp: RouteAttributes | None = Field(
        None, description="attributes of this service's VIP routes; fields set here override `bgp.attributes`"
    )
    forwarding: Forwarding = Field(
        "l2",
        description="how packets reach the backends: `l2`, the backend's MAC on a segment of the balancer (layer-2 "
        "DSR); `ipip` or `gue`, the client's packet in a tunnel to the backend's address, routed by the kernel's "
        "FIB (layer-3 DSR; needs `dataplane.tunnel_source_v4`/`_v6` for the backends' families, and forwarding on "
        "for the attached interfaces; the backend takes the tunnel off: `xdplb decap`)",
    )
    policy: str | None = Field(None, description="name of a policy whose checks to run")
    checks: tuple[Check, ...] | None = Field(None, description=_CHECKS_DESCRIPTION)
    backends: tuple[BackendConfig, ...] = Field((), description="the real servers")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if value and not _NAME.match(value):
            raise ValueError(f"bad name {value!r}: up to 128 letters, digits and _ . : / @ [ ] - (no spaces)")
        return value

    @field_validator("vips", mode="before")
    @classmethod
    def _one_vip(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _vip_and_name(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        if "vip" in data and "vips" in data:
            raise ValueError("give either vip or vips, not both")
        if not data.get("name"):
            name = _name_from_raw(data)
            if name is not None:
                data = {**data, "name": name}
        return data

    @model_validator(mode="after")
    def _apply_rules(self) -> "ServiceConfig":
        problems = _rules.service_problems(self)
        if not self.name:  # only when _name_from_raw could not read input that validated anyway
            problems.append((("name",), "cannot derive a name from the first VIP, port and protocol: set one"))
        _types.raise_problems("ServiceConfig", problems)
        return self

    @field_validator("table_size")
    @classmethod
    def _prime(cls, value: int) -> int:
        _rules.check_table_size(value)
        return value

    def forwarding_of(self, backend: BackendConfig) -> Forwarding:
        """``backend``'s forwarding: its own, else the service's."""
        return backend.forwarding or self.forwarding

    def check_vip(self, backend: BackendConfig) -> _types.IpAddress | None:
        """The VIP that ``backend``'s checks with ``via: dataplane`` are sent to: the first of the backend's IP
        family (None: the service has none of it)."""
        return next((vip for vip in self.vips if vip.version == backend.address.version), None)

    def backend_key(self, backend: BackendConfig) -> str:
        """A stable key of ``backend`` within this service across reloads: ``"web/198.18.0.11"``."""
        return f"{self.name}/{backend.address_text}"
