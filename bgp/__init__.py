"""Route health injection: VIP prefixes announced to BGP peers through a supervised ExaBGP child.

The core's interface::

    speaker = bgp.Speaker(bgp_config)          # config.BgpConfig; checks peers (BgpError) but runs nothing
    await speaker.start()                      # ExaBGP up with no routes; sessions come up on their own
    await speaker.announce(prefix, attrs)      # ipaddress.IPv4Network/IPv6Network, config.RouteAttributes;
                                               # idempotent, replaces the attributes of an announced prefix
    await speaker.withdraw(prefix)             # idempotent
    speaker.announced                          # Mapping[prefix, RouteAttributes], read-only
    speaker.peers()                            # Mapping[peer address, PeerState(state, since, routes_sent, reason)]
    async for state in speaker.watch_peers():  # each PeerState change, until stop(); or on_peer_change=callback
        ...
    await speaker.stop()                       # withdraw all, wait until sent, close sessions, stop ExaBGP

``Speaker`` is also an async context manager. Attributes are used as given: merge the VIP's overrides into the
defaults first (``bgp_config.attributes.merged(vip_attributes)``). A prefix goes to every peer of its address
family (IPv4 peers carry ipv4 unicast, IPv6 peers ipv6 unicast); ``next_hop`` unset means the session's own
address. Nothing is announced until ``announce`` is called.

Errors, all ``BgpError`` (a ``config.XdplbError``): ``CommandError`` (ExaBGP answered ``error``; nothing changed),
``ExabgpTimeoutError`` (no ack: ExaBGP is restarted and the change replayed; also a ``TimeoutError``),
``AttributeMismatchError`` (e.g. an IPv4 next-hop for an IPv6 prefix; also a ``ValueError``), and
``SpeakerStateError`` (a call before ``start``/after ``stop``; also a ``RuntimeError``).

Faults: ExaBGP runs with PDEATHSIG and behind a bridge that shuts it down when this process's end of the API socket
closes, so routes never outlive the daemon (SIGKILL included). If ExaBGP exits it is restarted with doubling
back-off and the announced set is replayed; a peer that reconnects gets the current set from ExaBGP.
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
