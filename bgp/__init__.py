"""Route health injection: VIP prefixes announced to BGP peers through a supervised ExaBGP child.

Public surface: ``Speaker`` (start/stop, announce/withdraw, announced, peers, watch_peers), ``PeerState`` and
``PeerStatus`` for the status API, and the errors, all rooted at ``BgpError`` (a ``config.XdplbError``).
"""

from bgp._errors import AttributeMismatchError, BgpError, CommandError, ExabgpTimeoutError, SpeakerStateError
from bgp._peers import PeerState, PeerStatus
from bgp._speaker import Speaker

__all__ = [
    "AttributeMismatchError",
    "BgpError",
    "CommandError",
    "ExabgpTimeoutError",
    "PeerState",
    "PeerStatus",
    "Speaker",
    "SpeakerStateError",
]
