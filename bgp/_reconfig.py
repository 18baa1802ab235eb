"""What a new ``bgp`` section changes for the running speaker, peer by peer (pure, no I/O).

ExaBGP compares each neighbour of a reloaded configuration with the running one: an identical neighbour keeps its
session, a changed one is torn down (Cease 6/3) and reconnected, a new one connects, a missing one is closed. So the
speaker only needs to know which peers are added, removed or changed, and which of their fields changed. Example::

    diff(old, new).describe()
    # ['peer 192.0.2.9 added', 'peer 192.0.2.7 removed', 'peer 192.0.2.8 changed: hold_time']
"""

import dataclasses
from collections.abc import Mapping

from config import BgpConfig, BgpPeer, IpAddress

__all__ = ["PeerChanges", "diff"]


# What ExaBGP is given for one peer; ``attributes`` is not among them: routes carry their own.
_FIELDS = ("peer_as", "local_as", "router_id", "local_address", "port", "hold_time", "password", "passive")
# Part of ExaBGP's name for the neighbour (and of its RIB's): a change makes it a new neighbour, with an empty RIB.
_IDENTITY = frozenset({"peer_as", "local_as", "router_id", "local_address"})


@dataclasses.dataclass(frozen=True)
class PeerChanges:
    """Peers added, removed, and changed (with the names of the fields that differ), in config order."""

    added: tuple[IpAddress, ...] = ()
    removed: tuple[IpAddress, ...] = ()
    changed: Mapping[IpAddress, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    @property
    def recreated(self) -> tuple[IpAddress, ...]:
        """Changed peers that ExaBGP will see as a new neighbour (a field of its name changed)."""
        return tuple(address for address, fields in self.changed.items() if _IDENTITY.intersection(fields))

    def describe(self) -> list[str]:
        """One line per peer, naming fields but never their values (a password may be one)."""
        return (
            [f"peer {address} added" for address in self.added]
            + [f"peer {address} removed" for address in self.removed]
            + [f"peer {address} changed: {', '.join(fields)}" for address, fields in self.changed.items()]
        )


def diff(old: BgpConfig, new: BgpConfig) -> PeerChanges:
    """The peers of ``new`` that differ from those of ``old``, as ExaBGP will see them; ``local_as`` and
    ``router_id`` at the top level count as a change of every peer they apply to."""
    before = {peer.address: _session(old, peer) for peer in old.peers}
    after = {peer.address: _session(new, peer) for peer in new.peers}
    changed: dict[IpAddress, tuple[str, ...]] = {}
    for address, fields in after.items():
        if address in before and fields != before[address]:
            changed[address] = tuple(name for name in _FIELDS if fields[name] != before[address][name])
    return PeerChanges(
        added=tuple(address for address in after if address not in before),
        removed=tuple(address for address in before if address not in after),
        changed=changed,
    )


def _session(config: BgpConfig, peer: BgpPeer) -> dict[str, object]:
    values: dict[str, object] = {name: getattr(peer, name) for name in _FIELDS if name not in ("local_as", "router_id")}
    values["local_as"] = peer.local_as or config.local_as
    values["router_id"] = config.router_id
    return values
