"""BGP settings: the local speaker, its peers, and the attributes announced with a VIP."""

import ipaddress
import re
from typing import Annotated

from pydantic import BeforeValidator, Field, field_validator

from config import _types
from config._base import XdplbModel

__all__ = ["BgpConfig", "BgpPeer", "GracefulRestart", "RouteAttributes"]

Asn = Annotated[int, Field(ge=1, le=4294967295, strict=True)]


def _router_id(value: object) -> ipaddress.IPv4Address:
    if isinstance(value, ipaddress.IPv4Address):  # from Python callers (and model_copy round trips)
        address = value
    elif not isinstance(value, str):  # pydantic would take the number 1 as 0.0.0.1
        raise ValueError(f"expected an IPv4 address as a string, got {value!r}")
    else:
        try:
            address = ipaddress.IPv4Address(value.strip())
        except ValueError:
            raise ValueError(f"not an IPv4 address: {value!r}") from None
    if address.is_unspecified:
        raise ValueError("0.0.0.0 is not a BGP identifier (RFC 6286): use a non-zero IPv4 address of this node")
    return address


RouterId = Annotated[ipaddress.IPv4Address, BeforeValidator(_router_id)]
_COMMUNITY = re.compile(r"^\d{1,5}:\d{1,5}$")
_LARGE_COMMUNITY = re.compile(r"^\d{1,10}:\d{1,10}:\d{1,10}$")


class RouteAttributes(XdplbModel):
    """Path attributes of an announced VIP prefix; unset fields are not sent."""

    next_hop: _types.HostAddress | None = Field(
        None, description="default: self (the session's local address); a unicast address"
    )
    med: int | None = Field(
        None, ge=0, le=4294967295, strict=True, description="multi-exit discriminator; lower is preferred"
    )
    local_preference: int | None = Field(
        None, ge=0, le=4294967295, strict=True, description="sent on iBGP sessions only"
    )
    communities: tuple[str, ...] = Field((), description='standard communities, "65000:100"')
    large_communities: tuple[str, ...] = Field((), description='large communities, "65000:1:2"')

    @field_validator("communities")
    @classmethod
    def _communities(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            if not _COMMUNITY.match(value) or any(int(part) > 65535 for part in value.split(":")):
                raise ValueError(f"bad community {value!r}: expected ASN16:VALUE16 such as 65000:100")
        return values

    @field_validator("large_communities")
    @classmethod
    def _large_communities(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            if not _LARGE_COMMUNITY.match(value) or any(int(part) > 4294967295 for part in value.split(":")):
                raise ValueError(f"bad large community {value!r}: expected A:B:C, each a 32-bit number")
        return values

    def merged(self, override: "RouteAttributes | None") -> "RouteAttributes":
        """These attributes with every field that ``override`` sets explicitly taken from it."""
        if override is None:
            return self
        return self.model_copy(update={name: getattr(override, name) for name in override.model_fields_set})


class BgpPeer(XdplbModel):
    """One BGP neighbour."""

    address: _types.AnyAddress = Field(description="the neighbour's address")
    peer_as: Asn = Field(description="the neighbour's AS number")
    local_as: Asn | None = Field(None, description="default: bgp.local_as")
    local_address: _types.AnyAddress | None = Field(
        None, description="source address of the session; default: kernel's choice"
    )
    port: _types.Port = Field(179, description="TCP port of the neighbour")
    hold_time: int = Field(30, strict=True, description="seconds; 0 or 3..65535")
    password: str | None = Field(None, description="TCP MD5 signature password")
    passive: bool = Field(False, strict=True, description="wait for the neighbour to connect instead of connecting")

    @field_validator("hold_time")
    @classmethod
    def _hold_time(cls, value: int) -> int:
        if value != 0 and not 3 <= value <= 65535:
            raise ValueError("hold time must be 0 or between 3 and 65535 seconds")
        return value


class GracefulRestart(XdplbModel):
    """BGP graceful restart (RFC 4724), as the restarting speaker: the peers keep our routes across a restart stop."""

    restart_time: int = Field(
        120,
        ge=1,
        le=4095,
        strict=True,
        description="seconds a peer keeps our routes after the session drops without a NOTIFICATION (a restart "
        "stop, a crash, a host that died), until we are back and say our routes are complete (End-of-RIB)",
    )


class BgpConfig(XdplbModel):
    """The local BGP speaker."""

    local_as: Asn = Field(description="our AS number")
    router_id: RouterId = Field(description="BGP identifier, usually an address of this node")
    peers: tuple[BgpPeer, ...] = Field((), description="neighbours to announce healthy VIPs to")
    attributes: RouteAttributes = Field(default_factory=RouteAttributes, description="defaults for every VIP")
    graceful_restart: GracefulRestart | None = Field(
        None,
        description="opt-in: the peers keep our routes through a restart stop (SIGUSR2), and also when this "
        "host dies, for restart_time; a full stop still withdraws them at once; unset: a session that drops takes "
        "the routes with it",
    )
