"""Per-peer session state as ExaBGP reports it, for the status API and metrics."""

import dataclasses
import datetime
import enum
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from bgp import _events
from config import IpAddress, Prefix

__all__ = ["PeerState", "PeerStatus", "PeerTable"]

_STATES = {"connected": "connected", "up": "established", "down": "down"}


class PeerStatus(enum.Enum):
    """Where a BGP session is."""

    DOWN = "down"
    CONNECTED = "connected"  # TCP up, OPEN exchange not finished
    ESTABLISHED = "established"


@dataclasses.dataclass(frozen=True)
class PeerState:
    """One peer's session: its status, since when, and how many of our prefixes it currently has from us.

    ``routes_sent`` counts prefixes that ExaBGP announced to the peer in this session and has not withdrawn since,
    taken from the UPDATEs ExaBGP reports sending, not from what the driver asked for.
    """

    address: IpAddress
    state: PeerStatus
    since: datetime.datetime
    routes_sent: int
    reason: str | None = None


class PeerTable:
    """The state of every configured peer, updated from ExaBGP's events."""

    def __init__(self, addresses: Iterable[IpAddress], on_change: Callable[[PeerState], None]) -> None:
        now = _now()
        self._states = {address: PeerState(address, PeerStatus.DOWN, now, 0) for address in addresses}
        self._sent: dict[IpAddress, set[Prefix]] = {address: set() for address in self._states}
        self._on_change = on_change

    def snapshot(self) -> Mapping[IpAddress, PeerState]:
        """A copy of every peer's state."""
        return dict(self._states)

    def sent(self, address: IpAddress) -> frozenset[Prefix]:
        """The prefixes the session to ``address`` currently carries."""
        return frozenset(self._sent.get(address, ()))

    def apply(self, event: _events.StateChange | _events.SentUpdate) -> None:
        """Fold one ExaBGP event in; a change of state is reported to ``on_change``.

        ``since`` and ``reason`` change only when the session enters or leaves Established: while a peer is away,
        each of ExaBGP's retries reports ``connected`` then ``down`` (a refused connect too), which would otherwise
        move ``since`` every few seconds and replace the reason the session went down (a Cease) with "connection
        failed".
        """
        if event.peer not in self._states:
            return
        if isinstance(event, _events.SentUpdate):
            sent = self._sent[event.peer]
            sent.difference_update(event.withdrawn)
            sent.update(event.announced)
            self._set(event.peer, routes_sent=len(sent), notify=False)
            return
        state = PeerStatus(_STATES.get(event.state, "down"))
        if state is not PeerStatus.ESTABLISHED:
            self._sent[event.peer].clear()
        old = self._states[event.peer]
        if (state is PeerStatus.ESTABLISHED) == (old.state is PeerStatus.ESTABLISHED):
            self._set(event.peer, state=state, routes_sent=len(self._sent[event.peer]))
            return
        since = datetime.datetime.fromtimestamp(event.time, datetime.timezone.utc) if event.time else _now()
        self._set(event.peer, state=state, since=since, routes_sent=len(self._sent[event.peer]), reason=event.reason)

    def all_down(self, reason: str) -> None:
        """Mark every session down (ExaBGP is gone, and its sessions with it)."""
        for address, state in self._states.items():
            self._sent[address].clear()
            if state.state is PeerStatus.ESTABLISHED:
                self._set(address, state=PeerStatus.DOWN, since=_now(), routes_sent=0, reason=reason)
            elif state.state is not PeerStatus.DOWN or state.routes_sent:
                self._set(address, state=PeerStatus.DOWN, routes_sent=0)

    def set_addresses(self, addresses: Iterable[IpAddress], *, reason: str = "removed from the configuration") -> None:
        """Track exactly ``addresses`` from now on: a new one starts down; a dropped one is reported down one last
        time (with ``reason``, if it was established) and forgotten."""
        wanted = list(addresses)
        for address in [a for a in self._states if a not in wanted]:
            state = self._states[address]
            if state.state is not PeerStatus.DOWN or state.routes_sent:
                if state.state is PeerStatus.ESTABLISHED:
                    self._set(address, state=PeerStatus.DOWN, routes_sent=0, since=_now(), reason=reason)
                else:
                    self._set(address, state=PeerStatus.DOWN, routes_sent=0)
            del self._states[address]
            del self._sent[address]
        now = _now()
        for address in wanted:
            if address not in self._states:
                self._states[address] = PeerState(address, PeerStatus.DOWN, now, 0)
                self._sent[address] = set()

    def _set(self, address: IpAddress, *, notify: bool = True, **changes: Any) -> None:
        old = self._states[address]
        new = dataclasses.replace(old, **changes)
        if new == old:
            return
        self._states[address] = new
        if notify or new.state is not old.state:
            self._on_change(new)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)
