"""Field types shared by the config models, and the way a model validator reports problems at precise paths."""

import ipaddress
from collections.abc import Callable, Iterable
from typing import Annotated

from pydantic import BeforeValidator, Field, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

__all__ = [
    "AnyAddress",
    "HostAddress",
    "IpAddress",
    "Loc",
    "Port",
    "Prefix",
    "Problem",
    "host_address",
    "plain_address",
    "raise_problems",
]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
"""An IPv4 or IPv6 address, as every package types one (``config.IpAddress``)."""
Prefix = ipaddress.IPv4Network | ipaddress.IPv6Network
"""An IPv4 or IPv6 network: a VIP's route, a subnet (``config.Prefix``)."""

Port = Annotated[int, Field(ge=1, le=65535, strict=True)]
Loc = tuple[str | int, ...]
Problem = tuple[Loc, str]
"""Where a cross-field rule found a mistake (relative to the model it checks) and what is wrong."""


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def _ip(value: object) -> IpAddress:
    # One validator instead of pydantic's IPv4Address | IPv6Address union, which reports two errors per bad value.
    if isinstance(value, IpAddress):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected an IP address as a string, got {value!r}")
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        raise ValueError(f"not an IP address: {value!r}") from None
    return plain_address(address)


def plain_address(address: IpAddress) -> IpAddress:
    """``address`` if it has one spelling; ValueError for an IPv6 zone id or an IPv4-mapped IPv6 address.

    Both name an address that is also written another way (``2001:db8::1%x`` and ``2001:db8::1`` compare unequal),
    which would slip past the rules that keep VIPs, backends and peers unique.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            raise ValueError(f"{address}: an IPv6 zone id (%{address.scope_id}) is not accepted")
        if address.ipv4_mapped is not None:
            raise ValueError(f"{address} is an IPv4-mapped IPv6 address: write {address.ipv4_mapped}")
    return address


def host_address(value: object) -> IpAddress:
    """``value`` as the address of one host; ValueError says why it is not one."""
    if isinstance(value, str) and "/" in value:
        try:
            network = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise ValueError(f"not an IP address: {value!r}") from None
        plain_address(network.network_address)
        if network.num_addresses != 1:
            raise ValueError(
                f"{value!r} is a network; give a single address such as {network.network_address} "
                f"(it is announced as /{network.max_prefixlen})"
            )
        value = str(network.network_address)
    address = _ip(value)
    if address.is_unspecified or address.is_multicast or address == _BROADCAST:
        raise ValueError(f"{address} is not a host address (unspecified, multicast or broadcast)")
    return address


AnyAddress = Annotated[IpAddress, BeforeValidator(_ip)]
"""A model field: an IPv4 or IPv6 address, written as a string."""

HostAddress = Annotated[IpAddress, BeforeValidator(host_address)]
"""An address of one host (VIP or backend): not unspecified, multicast or broadcast; ``/32`` or ``/128`` accepted."""


def raise_problems(title: str, problems: Iterable[Problem]) -> None:
    """Raise one ValidationError carrying every problem at its own path; return if there is none.

    Raised from a model validator, pydantic prefixes each path with where that model sits in the document.
    """
    details = [
        InitErrorDetails(type=PydanticCustomError("xdplb_rule", "{message}", {"message": message}), loc=loc, input=None)
        for loc, message in problems
    ]
    if details:
        raise ValidationError.from_exception_data(title, details)


def _host_address_of(version: int) -> Callable[[object], IpAddress]:
    def validate(value: object) -> IpAddress:
        address = host_address(value)
        if address.version != version:
            raise ValueError(f"{address} is not an IPv{version} address")
        return address

    return validate


IPv4HostAddress = Annotated[ipaddress.IPv4Address, BeforeValidator(_host_address_of(4))]
"""A host address that must be IPv4."""

IPv6HostAddress = Annotated[ipaddress.IPv6Address, BeforeValidator(_host_address_of(6))]
"""A host address that must be IPv6."""
