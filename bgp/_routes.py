"""The difference between the routes wanted and the routes ExaBGP holds, as batched API commands (pure, no I/O).

Routes that share a family and attributes go out in one command, up to ``max_prefixes`` prefixes each; withdrawing
everything is the single ``clear adj-rib out``. A plan holds at most ``max_bytes`` of commands, so that the commands
in flight always fit in the pipe to ExaBGP (64 KiB): the bridge then never blocks writing to ExaBGP while ExaBGP
blocks writing acks to the bridge. Example::

    plan({p1: a, p2: a}, {p3: b}, peers={4: (peer,)})
    # [Batch('neighbor 192.0.2.254 withdraw attributes nlri p3', ((p3, None),)),
    #  Batch('neighbor 192.0.2.254 announce attributes next-hop self ... nlri p1 p2', ((p1, a), (p2, a)))]
"""

import dataclasses
from collections.abc import Collection, Iterable, Mapping, Sequence

from bgp import _exabgp_config
from config import IpAddress, Prefix, RouteAttributes

__all__ = ["Batch", "Change", "plan"]

Change = tuple[Prefix, RouteAttributes | None]  # None: withdraw

MAX_PREFIXES = 100  # ExaBGP takes about 0.5 ms a prefix: an ack every ~50 ms shows it making progress
MAX_BYTES = 32 * 1024


@dataclasses.dataclass(frozen=True)
class Batch:
    """One API command and the route changes it carries; ``command`` is None when no peer has their family."""

    command: str | None
    changes: tuple[Change, ...]


def plan(
    wanted: Mapping[Prefix, RouteAttributes],
    held: Mapping[Prefix, RouteAttributes],
    *,
    peers: Mapping[int, Sequence[IpAddress]],
    skip: Mapping[Prefix, RouteAttributes | None] = {},
    alone: Collection[Prefix] = frozenset(),
    max_prefixes: int = MAX_PREFIXES,
    max_bytes: int = MAX_BYTES,
) -> list[Batch]:
    """The batches that bring ``held`` to ``wanted``: withdrawals first, then announcements, grouped by attributes.

    ``peers`` maps an IP version to the sessions that carry it. A prefix whose wanted state is its entry in ``skip``
    (ExaBGP rejected exactly that) is left out; a prefix in ``alone`` goes in a command of its own (to find which
    prefix of a rejected command was the bad one). The first batch is kept even if it alone exceeds ``max_bytes``.
    """
    changes: list[Change] = [(p, a) for p, a in wanted.items() if held.get(p) != a]
    changes += [(p, None) for p in held if p not in wanted]
    changes = [(p, a) for p, a in changes if p not in skip or skip[p] != a]
    if not changes:
        return []
    if not wanted and not alone and all(a is None for _, a in changes):
        return [Batch(_exabgp_config.WITHDRAW_ALL, tuple(sorted(changes, key=_order)))]
    groups: dict[tuple[int, RouteAttributes | None, Prefix | None], list[Prefix]] = {}
    for prefix, attributes in sorted(changes, key=_order):
        single = prefix if prefix in alone else None
        groups.setdefault((prefix.version, attributes, single), []).append(prefix)
    batches: list[Batch] = []
    size = 0
    for (version, attributes, _), prefixes in sorted(groups.items(), key=lambda item: item[0][1] is not None):
        for chunk in _chunks(prefixes, max_prefixes):
            batch = _batch(chunk, attributes, peers.get(version, ()))
            if batch.command is not None:
                size += len(batch.command) + 1
                if size > max_bytes and batches:
                    return batches
            batches.append(batch)
    return batches


def _batch(prefixes: Sequence[Prefix], attributes: RouteAttributes | None, peers: Sequence[IpAddress]) -> Batch:
    changes = tuple((prefix, attributes) for prefix in prefixes)
    if not peers:
        return Batch(None, changes)
    if attributes is None:
        return Batch(_exabgp_config.withdraw_command(peers, prefixes), changes)
    return Batch(_exabgp_config.announce_command(peers, prefixes, attributes), changes)


def _chunks(items: Sequence[Prefix], size: int) -> Iterable[Sequence[Prefix]]:
    return (items[i : i + size] for i in range(0, len(items), size))


def _order(change: Change) -> tuple[int, int, int]:
    prefix = change[0]
    return prefix.version, int(prefix.network_address), prefix.prefixlen
