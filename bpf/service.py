"""What the data plane is asked to serve: services and their backends, and how it serves them."""

import enum
import functools
import socket
from dataclasses import dataclass
from typing import Literal

import config
from bpf.errors import DataPlaneError
from bpf.maglev import DEFAULT_TABLE_SIZE

__all__ = [
    "PROTO_NUMBERS",
    "Backend",
    "BackendState",
    "BackendStatus",
    "NextHop",
    "Protocol",
    "Service",
    "ServiceKey",
    "ServiceStatus",
    "Tunnel",
]

Protocol = Literal["tcp", "udp"]
Tunnel = Literal["ipip", "gue"]
PROTO_NUMBERS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}


@dataclass(frozen=True, order=True)
class ServiceKey:
    """What a service listens on: ``192.0.2.100:80/tcp``."""

    vip: config.IpAddress
    port: int
    proto: Protocol

    def __str__(self) -> str:
        return config.vip_port_proto(self.vip, self.port, self.proto)


@dataclass(frozen=True)
class NextHop:
    """Where a backend's frames go on layer 2: its MAC, learnt on the balancer's interface ``ifindex`` (on VLAN
    ``vlan`` of it when the entry was on a VLAN device of that trunk)."""

    mac: str
    ifindex: int = 0  # 0: the ingress interface, whichever it is
    vlan: int = 0  # 0: untagged, or the frame's own tag


@dataclass(frozen=True)
class Backend:
    """A real server of a service. ``weight`` 0 drains it; ``mac`` None keeps it out until its MAC is known.

    ``ifindex`` is the interface it is on (where its MAC was learnt): frames for it leave through that one, with
    XDP_TX when it is the one they came in on and XDP_REDIRECT otherwise; 0 means the ingress interface, always.
    """

    address: config.IpAddress
    weight: int = 1
    vlan: int = 0
    mac: str | None = None
    ifindex: int = 0
    tunnel: Tunnel | None = None  # layer-3 DSR: no MAC needed, the next hop comes from the kernel's FIB

    @property
    def reachable_by_frame(self) -> bool:
        """Whether the data plane knows how to send it a frame: tunnelled, or its MAC known."""
        return self.tunnel is not None or self.mac is not None


@dataclass(frozen=True)
class Service:
    """A virtual service and its backends, as one unit of update."""

    key: ServiceKey
    backends: tuple[Backend, ...] = ()
    sticky: bool = False
    table_size: int = DEFAULT_TABLE_SIZE

    def validate(self) -> None:
        """Raise DataPlaneError naming the service if any field is out of range."""
        key = self.key
        if not 0 < key.port < 65536:
            raise DataPlaneError(f"{key}: port out of range")
        if key.proto not in PROTO_NUMBERS:
            raise DataPlaneError(f"{key}: protocol must be tcp or udp")
        if not config.is_prime(self.table_size):
            raise DataPlaneError(f"{key}: Maglev table size {self.table_size} is not prime")
        addresses = [b.address for b in self.backends]
        if len(set(addresses)) != len(addresses):
            raise DataPlaneError(f"{key}: a backend address appears twice")
        for backend in self.backends:
            if not 0 <= backend.weight <= 65535:
                raise DataPlaneError(f"{key}: backend {backend.address} weight out of range 0..65535")
            if not 0 <= backend.vlan <= 4094:
                raise DataPlaneError(f"{key}: backend {backend.address} VLAN out of range 0..4094")
            if backend.ifindex < 0:
                raise DataPlaneError(f"{key}: backend {backend.address} ifindex is negative")
            if backend.tunnel not in (None, "ipip", "gue"):
                raise DataPlaneError(f"{key}: backend {backend.address} tunnel must be ipip or gue")
            if backend.tunnel is not None and (backend.vlan or backend.ifindex):
                raise DataPlaneError(f"{key}: backend {backend.address} is tunnelled: the FIB picks its interface")


class BackendState(enum.Enum):
    """Whether the data plane gives a backend new flows, and if not why; ``BackendStatus.reason`` words it."""

    ACTIVE = "active"
    DRAINING = "draining (weight 0)"
    NO_MAC = "no MAC (neighbour unresolved)"
    NO_INTERFACE = "interface not attached"


@dataclass(frozen=True)
class BackendStatus:
    """How the data plane uses one backend right now."""

    address: config.IpAddress
    weight: int
    mac: str | None
    slot: int
    table_entries: int
    state: BackendState
    ifindex: int = 0  # where it leaves; 0: the ingress interface

    @property
    def reason(self) -> str:
        """``state`` for people: "active", "draining (weight 0)", "no MAC (neighbour unresolved)" or "interface N
        not attached"."""
        if self.state is BackendState.NO_INTERFACE:
            return f"interface {self.ifindex} not attached"
        return str(self.state.value)


@dataclass(frozen=True)
class ServiceStatus:
    """How the data plane serves one service right now."""

    key: ServiceKey
    service_id: int
    table_size: int  # 0 when no backend takes new flows
    backends: tuple[BackendStatus, ...]

    @functools.cached_property
    def active(self) -> int:
        """Backends taking new flows (counted once: a status is replaced, never changed)."""
        return sum(1 for backend in self.backends if backend.state is BackendState.ACTIVE)
