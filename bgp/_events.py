"""ExaBGP's JSON API messages, read into typed events (pure, no I/O).

A ``state`` message (``neighbor-changes``)::

    {"type": "state", "time": 1795767038.51, "neighbor": {"address": {"local": "127.0.0.2", "peer": "127.0.0.1"},
     ..., "state": "up"}}

An UPDATE ExaBGP sent (``send { parsed; update; }``)::

    {"type": "update", "neighbor": {"address": {...}, "direction": "send", "message": {"update": {
     "announce": {"ipv4 unicast": {"127.0.0.2": [{"nlri": "192.0.2.10/32"}]}},
     "withdraw": {"ipv4 unicast": [{"nlri": "192.0.2.11/32"}]}}}}}
"""

import dataclasses
import ipaddress
from collections.abc import Iterator, Mapping
from typing import Any

from config import IpAddress, Prefix

__all__ = ["SentUpdate", "StateChange", "parse"]


@dataclasses.dataclass(frozen=True)
class StateChange:
    """A session changed state: ``connected``, ``up`` or ``down``."""

    peer: IpAddress
    state: str
    time: float
    reason: str | None


@dataclasses.dataclass(frozen=True)
class SentUpdate:
    """ExaBGP sent an UPDATE to ``peer`` announcing and/or withdrawing prefixes."""

    peer: IpAddress
    announced: frozenset[Prefix]
    withdrawn: frozenset[Prefix]


def parse(message: Mapping[str, Any]) -> StateChange | SentUpdate | None:
    """The event in one decoded JSON message, or None for messages the driver does not use (EOR, notification)."""
    neighbor = message.get("neighbor")
    if not isinstance(neighbor, Mapping):
        return None
    try:
        peer = ipaddress.ip_address(neighbor["address"]["peer"])
    except (KeyError, TypeError, ValueError):
        return None
    kind = message.get("type")
    if kind == "state" and isinstance(neighbor.get("state"), str):
        reason = neighbor.get("reason")
        return StateChange(peer, neighbor["state"], float(message.get("time", 0.0)), str(reason) if reason else None)
    if kind == "update" and neighbor.get("direction") == "send":
        update = neighbor.get("message", {}).get("update")
        if not isinstance(update, Mapping):
            return None
        announced = frozenset(_nlris(update.get("announce", {}), nested=True))
        withdrawn = frozenset(_nlris(update.get("withdraw", {}), nested=False))
        return SentUpdate(peer, announced, withdrawn)
    return None


def _nlris(families: Any, *, nested: bool) -> Iterator[Prefix]:
    if not isinstance(families, Mapping):
        return
    for family, body in families.items():
        if family not in ("ipv4 unicast", "ipv6 unicast"):
            continue
        groups = body.values() if nested and isinstance(body, Mapping) else [body]
        for group in groups:
            for item in group if isinstance(group, list) else []:
                nlri = item.get("nlri") if isinstance(item, Mapping) else item
                if not isinstance(nlri, str):
                    continue
                try:
                    yield ipaddress.ip_network(nlri)
                except (TypeError, ValueError):
                    continue
